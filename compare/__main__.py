"""Entry point of `python -m compare` and the `mamba-gpt2-compare` script."""
import sys

from .cli import main as compare_main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["study"]:  # `python -m compare study SPEC --out DIR` (a prompt "study": `-- study`)
        from .study.cli import main as study_main
        return study_main(argv[1:])
    if argv[:1] == ["reproduce"]:  # `python -m compare reproduce --out DIR` (a prompt "reproduce": `-- reproduce`)
        from .reproduce.cli import main as reproduce_main
        return reproduce_main(argv[1:])
    return compare_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
