"""Writing a report folder, atomically (`store.publish`, as `Comparison.save`):

    report.html              one self-contained page (`render`)
    report.json              every number with its definition and parameters (`report.Report.to_json`)
    figures/{section}_{name}.png
    data/{section}_{name}.parquet   the tidy frames
    .mamba-gpt2-compare.json  the marker `store` reads: overwrite=True replaces only a previous report

Figures are rendered to PNG once, before the folder is staged; the same bytes go to figures/ and
into the page.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

from ..base import store
from . import render
from .report import Report

KIND = "reproduction report"
DPI = 110


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def check(out: str | os.PathLike, overwrite: bool) -> Path:
    """Raise now (before minutes of work) if a report may not be written at `out`."""
    return store.check(out, kind=KIND, overwrite=overwrite, argument="out")


def write(report: Report, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    pngs = {s.key: {name: png(fig) for name, fig in s.figures.items()} for s in report.sections}

    def fill(folder: Path) -> None:
        (folder / "figures").mkdir()
        (folder / "data").mkdir()
        for s in report.sections:
            for name, data in pngs[s.key].items():
                (folder / "figures" / f"{s.key}_{name}.png").write_bytes(data)
            for name, frame in s.frames.items():
                frame.to_parquet(folder / "data" / f"{s.key}_{name}.parquet", engine="pyarrow", index=False)
        (folder / "report.json").write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False),
                                            encoding="utf-8")
        (folder / "report.html").write_text(render.page(report, pngs), encoding="utf-8")

    return store.publish(out, fill, kind=KIND, overwrite=overwrite, argument="out")
