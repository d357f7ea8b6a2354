"""Results as files for `gr.File` downloads.

Each download gets its own temporary directory, so two sessions never overwrite each other.
(The figures come from `compare.figures` / `compare.noise_figures`, built outside pyplot, so a
long-running server holds no figure after it has sent it.)
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd


def new_directory() -> Path:
    return Path(tempfile.mkdtemp(prefix="mamba-gpt2-ui-"))


def table_files(frame: pd.DataFrame, stem: str) -> list[str]:
    """`frame` as CSV and Parquet; the paths, for a `gr.File(file_count="multiple")`."""
    directory = new_directory()
    csv, parquet = directory / f"{stem}.csv", directory / f"{stem}.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return [str(csv), str(parquet)]


def figure_file(figure, stem: str) -> str:
    path = new_directory() / f"{stem}.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return str(path)
