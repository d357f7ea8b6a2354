"""`python -m ui [--gpt2 SRC] [--mamba SRC] [--dtype float32|bfloat16] [--port N] [--host H]`: serve the app locally.

`python -m ui space --out DIR`: write the app as a Hugging Face Space repository (`ui.space`)."""
from __future__ import annotations

import argparse
import sys

from . import models


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["space"]:
        return space(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m ui", description=__doc__)
    for role in models.MODELS:
        parser.add_argument(f"--{role}", metavar="SRC",
                            help=f"alias, Hub id or local directory (default: ${models.ENV_VARS[role]} "
                                 f"or {models.DEFAULTS[role]!r})")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                        help=f"weights and matmuls of every model (default: ${models.DTYPE_ENV} or float32); "
                             "bfloat16 is faster on a GPU or a CPU with AMX / AVX512-BF16 only")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve the network")
    args = parser.parse_args(argv)
    models.configure(dtype=args.dtype, **{role: getattr(args, role) for role in models.MODELS})
    statuses = startup()
    from .app import build_app

    build_app(statuses=statuses).launch(server_name=args.host, server_port=args.port)


def space(argv: list[str]) -> None:
    from . import space as builder

    parser = argparse.ArgumentParser(prog="python -m ui space",
                                     description="write the app as a Hugging Face Space repository")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    args = parser.parse_args(argv)
    try:
        out = builder.write(args.out)
    except ValueError as err:
        parser.error(str(err))
    print(f"Space repository written to {out}: push it to a Gradio Space (see its README.md)")


def startup() -> list[models.Status]:
    """Load both models before serving and print what loaded and what is missing, with the fix."""
    print("Loading the models (once per process) ...", flush=True)
    statuses = models.check()
    for status in statuses:
        print(f"  {status.line}", flush=True)
    if any(s.problem for s in statuses):
        print("The app starts anyway; the tabs that need a missing model say so.", flush=True)
    return statuses


if __name__ == "__main__":
    main()
