"""The one line a command-line interface prints for a user error (shared by the package's CLIs)."""


def error_line(err: BaseException) -> str:
    """`err` as the one line a CLI prints for a user error."""
    return "error: " + " ".join(line.strip() for line in str(err).splitlines())
