"""`python -m compare study SPEC --out DIR`: run a study declared in a YAML or JSON file."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..base.errors import error_line
from ..handle.loading import ModelLoadError
from . import executors, results
from .runner import run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m compare study", description=(
        "Run a study (prompts × models × analyses, declared in SPEC) task by task into DIR; rerun the same "
        "command to resume: finished tasks are skipped, failed ones retried."))
    p.add_argument("spec", metavar="SPEC", help="the study: a .yaml/.yml or .json file (see compare.study.spec)")
    p.add_argument("--out", required=True, metavar="DIR", help="the study folder: results, spec, versions")
    p.add_argument("--executor", choices=executors.EXECUTORS, default="embedded",
                   help="embedded: this process, one task at a time (default); ray: Ray actors (the [ray] extra)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="with --executor ray: the cluster to join, e.g. auto or ray://HEAD:10001 "
                        "(default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="Ray actors (default: the cluster's CPUs / threads)")
    p.add_argument("--retries", type=int, default=executors.RETRIES, metavar="N",
                   help=f"Ray retries of a task whose worker died (default: {executors.RETRIES})")
    p.add_argument("--threads", type=int, default=executors.THREADS, metavar="N",
                   help=f"torch threads per task, both executors; rows match across executors at equal counts "
                        f"(default: {executors.THREADS})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DIR if it holds a different study (only that study's files are removed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 all tasks finished, 1 some failed (listed; rerun to retry), 2 a user error."""
    args = parser().parse_args(argv)
    try:
        summary = run(args.spec, args.out, executor=args.executor, address=args.address, workers=args.workers,
                      retries=args.retries, threads=args.threads, overwrite=args.overwrite, progress=not args.quiet)
    except (ValueError, TypeError, ImportError, ModelLoadError, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    print(f"study {summary.out}: {summary.done}/{summary.total} tasks finished ({summary.skipped} before this run), "
          f"{len(summary.failed)} failed, {summary.seconds:.1f} s")
    if summary.overflowed:
        print(f"  {summary.overflowed} noisy runs overflowed (logits NaN or infinite): kept as rows with "
              "finite=False (channels: the 'overflowed' column), counted as misses")
    for record in results.failures(summary.out):
        print(f"  failed {record['task']}: {record['error']}", file=sys.stderr)
    return 1 if summary.failed else 0
