"""A study's folder on disk: one Parquet file per finished task, written atomically.

Layout (`OUT` is the study folder):
    OUT/.mamba-gpt2-compare.json              marker: a result of this package, kind "study"
    OUT/_study.json                           the spec, its digest, the task count, package versions
    OUT/<label>/<model>/p000000.parquet       one finished task's rows (`tasks` names the keys)
    OUT/_failed/<label>__<model>__p000000.json  a task that failed: error, traceback, attempts
Names starting with '_' or '.' are skipped by pyarrow's dataset discovery, so
``pd.read_parquet("OUT/<label>")`` reads exactly the finished rows of one analysis.

The guarantee. A task's file is written to a hidden temporary name in its own folder
(``.p000000.parquet.tmp-PID-RAND``), flushed and fsynced, then `os.replace`d onto its name and
the folder fsynced: a file under its final name is always complete, and it exists iff the task
finished, so resuming skips exactly the finished tasks and no task's rows are ever written
twice. A crash leaves at most hidden temporary files, removed when the study is opened again
(only those whose writer process is gone). A folder holding another study (a different spec
digest) is refused unless overwrite=True; overwrite then removes only that study's own files
(the names above), never anything else in the folder.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import sys
import warnings
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..base import store
from ..base.store import MARKER
from .spec import Spec

KIND = "study"
MANIFEST = "_study.json"
FAILED = "_failed"
TASK_FILE = re.compile(r"p\d{6}\.parquet")
TEMP_FILE = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}")
PACKAGES = ("mamba-gpt2-compare", "torch", "transformers", "nnsight", "numpy", "pandas", "pyarrow", "datasets", "ray")


def open_study(out: str | os.PathLike, spec: Spec, n_tasks: int, *, overwrite: bool, run: dict[str, Any],
               argument: str = "out") -> Path:
    """Create or reopen the study folder `out` for `spec`; returns it as a Path.

    run: how this run executes (executor, threads), listed in the manifest with its versions.
    Raises FileExistsError when `out` holds anything but this study (another study: only
    without overwrite; files that are not a study: always), naming `argument`.
    """
    folder = store.folder_path(out, overwrite, argument=argument, example="out/study1")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{argument}: {folder} is a file; allowed values are a new path or a study folder")
    manifest = _read_manifest(folder)
    if manifest is not None and manifest.get("digest") != spec.digest():
        if not overwrite:
            raise FileExistsError(f"{argument}: {folder} holds another study (a different spec); allowed values "
                                  "are a new path, the same spec (to resume), or overwrite=True (CLI: --overwrite) "
                                  "to replace that study's files")
        _remove_study(folder, manifest)  # what else the user keeps in the folder stays beside the new study
        manifest = None
    elif manifest is None and folder.is_dir() and any(n != MARKER for n in os.listdir(folder)):
        raise FileExistsError(f"{argument}: {folder} is not empty and holds no study (no {MANIFEST}), so nothing "
                              "there is touched; allowed values are a new path, an empty folder or a study folder")
    folder.mkdir(parents=True, exist_ok=True)
    run = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), **run,
           "versions": versions()}
    if manifest is None:
        write_atomic(folder / MARKER, lambda f: f.write(json.dumps({"kind": KIND, "version": _version(PACKAGES[0])}).encode()))
        manifest = {"kind": KIND, "digest": spec.digest(), "tasks": n_tasks, "spec": spec.to_dict(),
                    "versions": run["versions"], "runs": []}
    elif manifest["versions"] != run["versions"]:
        warnings.warn(f"{folder}: resuming a study begun with other package versions; each run's versions are "
                      f"listed in {MANIFEST} under 'runs'", stacklevel=3)
    manifest["runs"].append(run)
    write_json(folder / MANIFEST, manifest)
    remove_temporaries(folder, spec)
    return folder


def versions() -> dict[str, str]:
    return {"python": sys.version.split()[0], **{p: _version(p) for p in PACKAGES}}


def task_path(folder: Path, key: str) -> Path:
    return folder / f"{key}.parquet"


def finished(folder: Path, keys: Iterable[str]) -> set[str]:
    """The keys whose result file exists (and so is complete)."""
    return {key for key in keys if task_path(folder, key).is_file()}


def write_task(folder: Path, key: str, frame: pd.DataFrame) -> Path:
    """Publish one task's rows atomically (see the module docstring); clears its failure record."""
    path = task_path(folder, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_atomic(path, lambda f: pq.write_table(table, f))
    failure_path(folder, key).unlink(missing_ok=True)
    return path


def write_failure(folder: Path, key: str, error: str, trace: str | None, attempts: int) -> None:
    write_json(failure_path(folder, key), {"task": key, "error": error, "traceback": trace, "attempts": attempts})


def failure_path(folder: Path, key: str) -> Path:
    return folder / FAILED / (key.replace("/", "__") + ".json")


def failures(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The failure records of a study folder, by task key."""
    folder = Path(folder) / FAILED
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [json.loads(p.read_text()) for p in paths]


def read(out: str | os.PathLike, label: str) -> pd.DataFrame:
    """All finished rows of one analysis (its label), in task order (model folder, then prompt)."""
    folder = Path(out) / label
    if not (Path(out) / MANIFEST).is_file():
        raise FileNotFoundError(f"out: {out} holds no study ({MANIFEST} is missing)")
    paths = sorted(p for p in folder.glob("*/*.parquet") if TASK_FILE.fullmatch(p.name))
    if not paths:
        raise FileNotFoundError(f"label: no finished task of {label!r} in {out}")
    return pd.concat([pq.read_table(p).to_pandas() for p in paths], ignore_index=True)


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write `path` through a hidden temporary in its folder: fsync, `os.replace`, fsync the folder."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(temp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2, ensure_ascii=False).encode()))


def remove_temporaries(folder: Path, spec: Spec) -> None:
    """Delete the hidden temporaries that killed writers left (their process is gone)."""
    for sub in [folder, folder / FAILED, *(p for a in spec.analyses for p in (folder / a.label).glob("*"))]:
        if not sub.is_dir():
            continue
        for name in os.listdir(sub):
            m = TEMP_FILE.fullmatch(name)
            if m and not _alive(int(m["pid"])):
                (sub / name).unlink(missing_ok=True)


def _remove_study(folder: Path, manifest: dict) -> None:
    """Delete the files a study wrote (task files, failure records, manifest); nothing else."""
    labels = [a["label"] for a in manifest.get("spec", {}).get("analyses", [])]
    for label in labels:
        for sub in (folder / label).glob("*"):
            if sub.is_dir():
                for p in sub.iterdir():
                    if TASK_FILE.fullmatch(p.name) or TEMP_FILE.fullmatch(p.name):
                        p.unlink()
                _rmdir(sub)
        _rmdir(folder / label)
    if (folder / FAILED).is_dir():
        for p in (folder / FAILED).glob("*.json"):
            p.unlink()
        _rmdir(folder / FAILED)
    (folder / MANIFEST).unlink()


def _read_manifest(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise FileExistsError(f"out: {folder / MANIFEST} is unreadable ({err}); not touching {folder}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise FileExistsError(f"out: {folder / MANIFEST} is not a study manifest; not touching {folder}")
    return data


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty: something that is not ours stays


def _fsync_folder(path: Path) -> None:
    # The rename is durable only once the folder's entry is on disk; Windows cannot open a folder.
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would end the process there; keep its files
        return True
    if pid == os.getpid():
        return False  # this process writes nothing while it opens the study
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
