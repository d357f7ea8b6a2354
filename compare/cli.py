"""`python -m compare TEXT`: compare models on one prompt, print a table, save data and figures."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .base import store
from .base.errors import error_line
from .analyses.comparison import Comparison, compare
from .analyses.signatures import COMPARE
from .handle.loading import ModelLoadError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m compare", description=(
        "Run a prompt through Mamba and GPT-2 (or any models given) and compare their next-token "
        "predictions position by position."))
    p.add_argument("prompt", help="the prompt text, or comma-separated token IDs with --ids")
    p.add_argument("--models", nargs="+", default=["mamba-130m", "gpt2"], metavar="SOURCE",
                   help="aliases, Hub ids or local model directories; the first is the reference "
                        "(default: mamba-130m gpt2)")
    variant = COMPARE["variant"]  # compare's signature
    p.add_argument("--variant", choices=variant.choices, default=variant.default,
                   help=f"what 'the same prompt' means across tokenizers (default: {variant.default})")
    p.add_argument("--track", action="append", default=[], metavar="TOKEN",
                   help="a token to follow (one token in every tokenizer, e.g. ' Mary'); repeatable")
    p.add_argument("--ids", action="store_true", help="the prompt is token IDs in the first model's tokenizer")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--out", default=None, metavar="DIR", help="write Parquet, metadata.json and figures here")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DIR if it holds a previous comparison (anything else is refused)")
    return p


def table(comparison: Comparison) -> str:
    """Per position of the first model: its token, each model's prediction and P, agreement."""
    runs = list(comparison.runs.values())
    first = runs[0]
    paired = {(r["other"], r["position"]): r["other_position"] for _, r in comparison.cross.iterrows()}
    header = ["pos", "token"] + [f"{run.model} prediction (P)" for run in runs] + ["agree"]
    lines = [header]
    for t, token in enumerate(first.tokens):
        cells, predictions = [str(t), repr(token)], []
        for run in runs:
            u = t if run is first else paired.get((run.model, t))
            if u is None:
                cells.append("—")
                continue
            predictions.append(run.predictions[u])
            cells.append(f"{run.predictions[u]!r} ({run.p_predictions[u]:.3f})")
        complete = len(predictions) == len(runs)
        cells.append(("yes" if len(set(predictions)) == 1 else "no") if complete else "—")
        lines.append(cells)
    widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.out is not None:  # before the models run, which may take minutes
            store.check(args.out, kind="comparison", overwrite=args.overwrite, argument="--out")
        prompt = _ids(args.prompt) if args.ids else args.prompt
        comparison = compare(prompt, args.models, variant=args.variant, track=args.track or None,
                             device=args.device, progress=False)
        print(table(comparison))
        print(comparison.summary())
        for run in comparison.runs.values():
            if run.lock_in is not None:
                print(f"{run.model}: locks in at position {run.lock_in}")
        if args.out is not None:
            print(f"wrote {comparison.save(args.out, overwrite=args.overwrite)}")
    # User errors, including the output path's (FileExistsError, PermissionError, ... are
    # OSErrors); anything else is a bug and keeps its traceback.
    except (ValueError, TypeError, ModelLoadError, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    return 0


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"prompt: with --ids, give integers separated by commas or spaces, got {text!r}") from None
