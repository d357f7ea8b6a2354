"""Results as files for `gr.File` downloads, and figures released from pyplot.

A long-running server must close every figure it draws (pyplot keeps them alive otherwise);
`shown` does that and returns the figure, which `gr.Plot` and `savefig` can still render.
Each download gets its own temporary directory, so two sessions never overwrite each other.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a server has no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def shown(figure):
    plt.close(figure)
    return figure


def _directory() -> Path:
    return Path(tempfile.mkdtemp(prefix="mamba-gpt2-ui-"))


def table_files(frame: pd.DataFrame, stem: str) -> list[str]:
    """`frame` as CSV and Parquet; the paths, for a `gr.File(file_count="multiple")`."""
    directory = _directory()
    csv, parquet = directory / f"{stem}.csv", directory / f"{stem}.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return [str(csv), str(parquet)]


def figure_file(figure, stem: str) -> str:
    path = _directory() / f"{stem}.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return str(path)
