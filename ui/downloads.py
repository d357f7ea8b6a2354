"""Results as files for `gr.File` downloads.

Each result's files share one new temporary directory, so two sessions never overwrite each other;
directories older than `KEEP_SECONDS` are removed when a new one is made, so a long-running
Space does not fill its disk (Gradio has copied the files into its own cache by then).
(The figures come from `compare.figures.base` / `compare.figures.noise`, built outside pyplot, so a
long-running server holds no figure after it has sent it.)
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd


KEEP_SECONDS = 3600
ROOT = Path(tempfile.gettempdir()) / "mamba-gpt2-ui"


def new_directory() -> Path:
    ROOT.mkdir(exist_ok=True)
    cutoff = time.time() - KEEP_SECONDS
    for old in ROOT.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=ROOT))


def table_files(directory: Path, frame: pd.DataFrame, stem: str) -> list[str]:
    """`frame` as CSV and Parquet in `directory`; the paths, for a `gr.File(file_count="multiple")`."""
    csv, parquet = directory / f"{stem}.csv", directory / f"{stem}.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return [str(csv), str(parquet)]


def figure_file(directory: Path, figure, stem: str) -> str:
    path = directory / f"{stem}.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return str(path)
