"""Entry point of `python -m compare` and the `mamba-gpt2-compare` script."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
