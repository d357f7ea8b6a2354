"""Publishing a result folder atomically and safely: `publish(directory, write, kind=...)`.

The guarantee. A save either leaves `directory` as it was or puts a complete new result there; it
never deletes anything but a result of ours. How:
- the result is written into a hidden staging folder beside the target, `.NAME.new-PID-RAND`,
  and moved into place with one `os.rename`, so nobody ever sees half a result;
- every result carries a marker file (`MARKER`: the kind of result and the package version), and
  `overwrite=True` replaces only a folder whose marker names the same kind, nothing else;
- the rename that publishes also claims the name (it fails when the target exists and is not
  empty), so of two saves racing to one folder exactly one wins; with `overwrite=False` the other
  raises FileExistsError, with `overwrite=True` the folder ends up holding one complete result and
  a save that lost the race raises FileExistsError;
- replacing moves the old result aside to `.NAME.old-PID-RAND`, renames the new one in, then
  deletes the old one; any exception (Ctrl-C included) on the way puts the old result back and
  removes the staging folder;
- a save killed outright leaves those hidden folders; the next save of the same folder (or
  `recover`) puts back an old result whose folder is missing, deletes one whose folder is complete,
  and deletes staging folders — only folders whose owner process is gone and that carry the
  marker (or are empty).
Owners are told apart by process id, so the recovery is for saves on one machine.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

MARKER = ".mamba-gpt2-compare.json"


def package_version() -> str:
    """This package's version; "not installed" when it runs from its source folder uninstalled
    (a Hugging Face Space installs requirements.txt, not the package, and runs app.py next to it)."""
    try:
        return version("mamba-gpt2-compare")
    except PackageNotFoundError:
        return "not installed"
NAME_MAX = 255  # bytes in one file name on Linux's file systems (ext4, xfs, btrfs, tmpfs) and macOS's
STAGING_EXTRA = len(".") + len(".new-") + 7 + len("-") + 8  # `_hidden`'s additions: pid ≤ 7 digits, 8 hex


def publish(directory: str | os.PathLike, write: Callable[[Path], None], *, kind: str,
            overwrite: bool = False, argument: str = "directory") -> Path:
    """Fill a fresh folder with `write(folder)`, then publish it at `directory`; returns the path.

    kind: what the result is ("comparison", "prompt suites"): a folder is only ever replaced by a
        result of its own kind. argument: the caller's name for `directory`, for error messages.
    """
    target = check(directory, kind=kind, overwrite=overwrite, argument=argument)
    staging = _hidden(target, "new")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as err:
        raise type(err)(_cannot_write(argument, target.parent, err.strerror)) from err
    try:
        (staging / MARKER).write_text(json.dumps({"kind": kind, "version": package_version()}))
        write(staging)
        _claim(staging, target, kind, overwrite, argument)
    finally:
        _remove(staging)  # already gone when the claim moved it into place
    return target


def check(directory: str | os.PathLike, *, kind: str, overwrite: bool, argument: str = "directory") -> Path:
    """`directory` as a Path, after `recover`; raises if a result of `kind` may not be saved there."""
    target = folder_path(directory, overwrite, argument=argument)
    size = len(os.fsencode(target.name))
    if size > NAME_MAX - STAGING_EXTRA:
        raise ValueError(f"{argument}: the folder name is {size} bytes, and its hidden staging name "
                         f"({STAGING_EXTRA} bytes longer) would pass the file system's {NAME_MAX}; allowed values "
                         f"are folder names of at most {NAME_MAX - STAGING_EXTRA} bytes")
    ancestor = next(p for p in target.parents if p.exists())
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{argument}: {ancestor} is a file, not a folder; allowed values are "
                                 "paths whose parents are folders (or do not exist yet)")
    if not os.access(ancestor, os.W_OK | os.X_OK):  # found now, not after minutes of work
        raise PermissionError(_cannot_write(argument, ancestor, "permission denied"))
    recover(target)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{argument}: {target} already exists; allowed values are a new path, "
                                  "or pass overwrite=True (CLI: --overwrite) to replace a previous result")
        _require_ours(target, kind, argument)
    return target


def folder_path(directory, overwrite: bool, *, argument: str, example: str = "out/run1") -> Path:
    """`directory` as a Path that names a folder of its own; TypeError/ValueError naming `argument`
    (or `overwrite`, which must be a bool) otherwise."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{argument}: must be a path (str or os.PathLike), got {type(directory).__name__}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite: must be True or False, got {overwrite!r}")
    target = Path(directory)
    if target.name in ("", ".", ".."):
        raise ValueError(f"{argument}: {os.fspath(directory)!r} names no folder of its own; allowed values "
                         f"are paths that end in a folder name, e.g. {example}")
    text = str(target)
    if "\0" in text:
        raise ValueError(f"{argument}: {text!r} holds a NUL character; allowed values are paths without one")
    try:
        text.encode("utf-8")  # pyarrow writes only UTF-8 paths; a non-UTF-8 byte from os.listdir is a lone surrogate
    except UnicodeEncodeError as err:
        raise ValueError(f"{argument}: {text!r} holds a lone surrogate U+{ord(text[err.start]):04X} (a byte that "
                         "is not UTF-8); allowed values are paths that are valid Unicode text") from None
    return target


def recover(directory: str | os.PathLike) -> None:
    """Finish what killed saves left beside `directory` (see the module docstring)."""
    target = Path(directory)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(new|old)-(\d+)-[0-9a-f]+")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    leftovers = [(m[1], target.parent / m[0]) for m in map(pattern.fullmatch, names)
                 if m and not _alive(int(m[2]))]
    old = [p for role, p in leftovers if role == "old" and _kind(p)]
    if old and not (target.exists() or target.is_symlink()):
        try:
            os.rename(max(old, key=os.path.getmtime), target)  # the newest previous result
        except OSError:
            pass  # a concurrent save or recovery got there first
    for _, folder in leftovers:
        _remove(folder)


def _claim(staging: Path, target: Path, kind: str, overwrite: bool, argument: str) -> None:
    try:
        os.rename(staging, target)
        return
    except OSError as err:
        if not _occupied(err):
            raise
        if not overwrite:
            raise FileExistsError(f"{argument}: {target} was created by another save meanwhile; allowed "
                                  "values are a new path, or pass overwrite=True (CLI: --overwrite)") from None
    lost = FileExistsError(f"{argument}: another save replaced {target} at the same time and its result "
                           "stands; save again to replace it")
    try:
        _require_ours(target, kind, argument)
    except FileNotFoundError:  # another save has just moved it aside to replace it
        raise lost from None
    backup = _hidden(target, "old")
    try:
        os.rename(target, backup)
    except FileNotFoundError:
        raise lost from None
    try:
        os.rename(staging, target)
    except BaseException as err:
        _put_back(backup, target)
        if isinstance(err, OSError) and _occupied(err):
            raise lost from None
        raise
    _remove(backup)


def _put_back(backup: Path, target: Path) -> None:
    try:
        os.rename(backup, target)
    except OSError as err:
        if not _occupied(err):
            raise
        _remove(backup)  # a concurrent save's complete result took its place


def _require_ours(target: Path, kind: str, argument: str) -> None:
    found = _kind(target)
    empty = target.is_dir() and not target.is_symlink() and not any(target.iterdir())
    if found != kind and not empty:  # an empty folder loses nothing; the claim's rename replaces it
        what = f"holds a {found}, not a {kind}" if found else f"is not a result of this package (no {MARKER})"
        raise FileExistsError(f"{argument}: {target} {what}, so it is not replaced; allowed values are a "
                              f"new path, or a folder a previous {kind} save wrote (with overwrite=True)")


def _kind(folder: Path) -> str | None:
    """The kind named by `folder`'s marker; None when `folder` is not a result of ours."""
    if folder.is_symlink():
        return None
    try:
        return json.loads((folder / MARKER).read_text())["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove(folder: Path) -> None:
    """Delete `folder` if it is ours or empty; anything else stays."""
    if _kind(folder):
        shutil.rmtree(folder, ignore_errors=True)  # a concurrent recovery may delete it too
    else:
        try:
            folder.rmdir()
        except OSError:
            pass


def _cannot_write(argument: str, folder: Path, reason: str | None) -> str:
    return (f"{argument}: cannot create a folder in {folder} ({reason}); allowed values are paths "
            "inside a folder you can write to")


def _hidden(target: Path, role: str) -> Path:
    return target.with_name(f".{target.name}.{role}-{os.getpid()}-{secrets.token_hex(4)}")


def _occupied(err: OSError) -> bool:
    # Renaming a folder onto a non-empty folder fails with ENOTEMPTY or EEXIST (POSIX allows
    # either), onto a file with ENOTDIR.
    return err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR)


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would signal it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        pass
    return True
