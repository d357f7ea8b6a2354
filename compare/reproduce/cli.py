"""`python -m compare reproduce --out DIR`: the thesis's experiments, one report folder."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from ..base import checkpoint, store
from .. import families
from ..analyses.comparison import Stopped
from ..base.errors import error_line
from ..handle.loading import ModelLoadError, cached_model

ROLES = (("--mamba", "ssm", "an SSM (a Mamba model)"), ("--gpt2", "transformer", "a transformer (GPT-2, Pythia)"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m compare reproduce", description=(
        "Rerun every experiment of the 2024 thesis (Mamba-130m vs GPT-2) on two models and write DIR/report.html "
        "(one self-contained page), DIR/report.json (every number with its definition), figures and Parquet."))
    p.add_argument("--out", required=True, metavar="DIR", help="the report folder (written atomically)")
    p.add_argument("--mamba", default="mamba-130m", metavar="SRC",
                   help="the model in the Mamba role: alias, Hub id or local directory (default: mamba-130m)")
    p.add_argument("--gpt2", default="gpt2", metavar="SRC",
                   help="the model in the GPT-2 role: alias, Hub id or local directory (default: gpt2)")
    p.add_argument("--quick", action="store_true", help="small sweeps (few layers, levels, trials): a check that "
                                                        "the report runs, not the thesis's sizes")
    p.add_argument("--trials", type=_count(1), default=None, metavar="N",
                   help="noise draws per channel of the channel ranking, §7.4 (default: 4 full, 2 quick)")
    p.add_argument("--noise-levels", type=_count(2), default=None, metavar="N",
                   help="levels in [0, 1] of each noise sweep, one draw each (default: 100 full, the thesis's §7.1; "
                        "5 quick)")
    p.add_argument("--seed", type=_seed, default=0, metavar="N", help="seed of every noise draw and bootstrap (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it holds a previous report "
                                                            "(anything else is refused)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _count(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {least}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {least}, got {value}")
        return value
    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, got {value}")
    return value


def source_role(source: str, flag: str) -> str | None:
    """The thesis role the model `source` names fits (`Family.role`: "ssm" or "transformer"), read from its alias or its
    folder's config.json without loading weights; None for a Hub id (known only once fetched).
    Raises ModelLoadError naming `flag` for a path that does not exist or a name that is no alias."""
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            return families.detect(checkpoint.read_config(path), path).role
        if path.exists():
            raise ModelLoadError(f"{source}: is a file; pass the directory that holds config.json and the weights")
        for family in families.FAMILIES.values():
            if source in family.aliases:
                return family.role
        if source.count("/") == 1 and not source.startswith((".", "/", "~")):
            return None  # a Hub id
        if "/" in source:
            raise ModelLoadError(f"{source}: no such directory")
        raise ModelLoadError(f"unknown model alias {source!r}; known aliases: {', '.join(families.ALIASES)}; "
                             "or pass a Hub id ('owner/name') or a local directory")
    except ModelLoadError as err:
        raise ModelLoadError(f"{flag}: {err}") from None


def check_roles(mamba: str, gpt2: str) -> list[str]:
    """Both sources checked (paths, aliases, families) before any model loads; the warnings for a model
    in a role its family does not fit (the report runs, and its header says so)."""
    roles = [source_role(source, flag) for source, (flag, _, _) in zip((mamba, gpt2), ROLES)]
    wrong = [r is not None and r != want for r, (_, want, _) in zip(roles, ROLES)]
    if all(wrong):
        return [f"the roles look swapped: --mamba {mamba!r} is a transformer and --gpt2 {gpt2!r} an SSM; "
                f"the report treats the first as the thesis's Mamba (pass --mamba {gpt2} --gpt2 {mamba})"]
    return [f"{flag}: {source!r} is not {what}; the report runs it in that role anyway"
            for source, bad, (flag, _, what) in zip((mamba, gpt2), wrong, ROLES) if bad]


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 written, 2 a user error (one `error:` line naming the argument)."""
    from . import thesis_report, writing  # the sections import the engine and matplotlib: only when running

    args = parser().parse_args(argv)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"reproduce: {done}/{total} steps, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    try:
        # every argument is checked before anything loads, so that an error names the flag at fault
        store.check(args.out, kind=writing.KIND, overwrite=args.overwrite, argument="--out")
        for warning in check_roles(args.mamba, args.gpt2):
            print(f"warning: {warning}", file=sys.stderr)
        for flag, source in (("--mamba", args.mamba), ("--gpt2", args.gpt2)):
            try:
                cached_model(source, device=args.device)  # the cache thesis_report() reads the model from
            except (ValueError, TypeError, ModelLoadError, OSError) as err:
                raise type(err)(f"{flag}: {err}") from err
        path = thesis_report(args.out, models=(args.mamba, args.gpt2), quick=args.quick, seed=args.seed,
                         trials=args.trials, noise_levels=args.noise_levels,
                         progress=progress, overwrite=args.overwrite, device=args.device)
    except (ValueError, TypeError, ModelLoadError, OSError, Stopped) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    print(f"wrote {path / 'report.html'} ({time.perf_counter() - start:.0f} s)")
    return 0
