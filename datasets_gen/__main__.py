"""Command line: `python -m datasets_gen build --out DIR --seed 0 ...` and `... push DIR REPO`."""

from __future__ import annotations

import argparse
import sys

from compare.base.errors import error_line
from datasets_gen.build import build
from datasets_gen.export import check_out, push_to_hub, save
from datasets_gen.suites import DEFAULT_SUITES, SUITES, CustomConfig


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    """`["a=1", "b=2"]` → `{"a": "1", "b": "2"}`, rejecting items without `=`."""
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise ValueError(f"{flag}: {value!r} is not KEY=VALUE")
        pairs[key] = item
    return pairs


def _sizes(values: list[str]) -> dict[str, int]:
    sizes = {}
    for suite, n in _pairs(values, "--size").items():
        try:
            sizes[suite] = int(n)
        except ValueError:
            raise ValueError(f"--size {suite}: {n!r} is not an integer") from None
    return sizes


def _ids(values: list[str]) -> tuple[tuple[int, ...], ...]:
    try:
        return tuple(tuple(int(i) for i in v.split(",")) for v in values)
    except ValueError:
        raise ValueError(f"--ids: {values} must be comma-separated integers, e.g. 42,69") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m datasets_gen", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the suites and save them (Arrow, Parquet, card)")
    b.add_argument("--out", required=True, help="output folder (must not exist, or see --overwrite)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--suites", nargs="+", default=list(DEFAULT_SUITES),
                   choices=sorted(set(SUITES) - {"custom"}))
    b.add_argument("--size", action="append", default=[], metavar="SUITE=N",
                   help="number of prompts of a suite (repeatable)")
    b.add_argument("--tokenizer", action="append", default=[], metavar="MODEL=PATH",
                   help="mamba or gpt2 → local path or Hub id (repeatable; pythia reads mamba's)")
    b.add_argument("--text", action="append", default=[], help="a custom prompt (repeatable)")
    b.add_argument("--ids", action="append", default=[], metavar="ID,ID,...",
                   help="a custom prompt as source-tokenizer IDs (repeatable)")
    b.add_argument("--source", default="mamba", help="model that defines custom prompts")
    b.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds a previous build (anything else is refused)")
    b.add_argument("--push-to-hub", metavar="REPO_ID", help="upload after saving")
    b.add_argument("--no-progress", action="store_true")
    u = sub.add_parser("push", help="upload a saved build to a Hub dataset repo")
    u.add_argument("out")
    u.add_argument("repo_id")
    u.add_argument("--private", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "push":
            print(push_to_hub(args.out, args.repo_id, private=args.private))
            return 0
        check_out(args.out, overwrite=args.overwrite)
        suites: list = list(args.suites)
        if args.text or args.ids:
            suites.append(CustomConfig(texts=tuple(args.text), ids=_ids(args.ids),
                                       source=args.source))
        dataset = build(seed=args.seed, suites=suites, sizes=_sizes(args.size),
                        tokenizers=_pairs(args.tokenizer, "--tokenizer"),
                        progress=not args.no_progress)
        out = save(dataset, args.out, overwrite=args.overwrite)
        print(f"saved {sum(ds.num_rows for ds in dataset.values())} prompts to {out}")
        if args.push_to_hub:
            print(push_to_hub(out, args.push_to_hub))
    # User errors, including the output path's (FileExistsError, PermissionError, ... are
    # OSErrors) and a failed upload (RuntimeError); anything else keeps its traceback.
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
