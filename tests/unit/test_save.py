"""Saving never destroys data (issue #11): `compare.base.store` behind `Comparison.save` and
`datasets_gen.save`. Every test asserts on what is on disk afterwards, not on what save returns."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

import compare as package
from compare.analyses.comparison import Comparison


LAST_FIGURE = "cross"  # `Comparison.figures` writes it last


@pytest.fixture(scope="module")
def results(tiny):
    """Two different comparisons on the tiny models: what two racing saves write."""
    handles, _ = tiny
    models = [handles["mamba"], handles["gpt2"]]
    pair = [package.compare(text, models, variant="native", keep_arrays=False)
            for text in ("Mary and John went", "the cat runs")]
    assert all(list(r.figures())[-1] == LAST_FIGURE for r in pair)
    return pair


@pytest.fixture
def store():
    from compare.base import store

    return store


@pytest.fixture(scope="module")
def dead_pid():
    """The id of a process that has exited: what a killed save leaves in its folder names."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def frame(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "runs.parquet")


def holds(folder: Path, result: Comparison) -> bool:
    try:
        pd.testing.assert_frame_equal(frame(folder), result.to_frame(), check_dtype=False)
    except AssertionError:
        return False
    return True


def race(saves, monkeypatch) -> list[BaseException | None]:
    """Run each save in its own thread, all released together at the last moment before they
    publish (their last figure written); returns what each raised, or None."""
    barrier, outcomes = threading.Barrier(len(saves)), [None] * len(saves)
    real_savefig = Figure.savefig

    def savefig(figure, *args, **kwargs):
        real_savefig(figure, *args, **kwargs)
        if Path(args[0]).stem == LAST_FIGURE:
            barrier.wait(timeout=60)

    def run(n, save):
        try:
            save()
        except Exception as err:  # the outcome under test
            outcomes[n] = err

    monkeypatch.setattr(Figure, "savefig", savefig)
    threads = [threading.Thread(target=run, args=(n, s)) for n, s in enumerate(saves)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


# (a), (b): concurrent saves

def test_two_saves_racing_to_a_new_folder_one_wins_the_other_is_told(results, tmp_path, monkeypatch):
    out = tmp_path / "out"
    outcomes = race([lambda r=r: r.save(out) for r in results], monkeypatch)
    assert sorted(type(o).__name__ for o in outcomes) == ["FileExistsError", "NoneType"]
    assert holds(out, results[outcomes.index(None)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_two_overwriting_saves_racing_leave_one_complete_result(results, tmp_path, monkeypatch):
    out = results[0].save(tmp_path / "out")
    outcomes = race([lambda r=r: r.save(out, overwrite=True) for r in results], monkeypatch)
    assert all(o is None or isinstance(o, FileExistsError) for o in outcomes), outcomes
    assert None in outcomes
    assert any(holds(out, r) for r, o in zip(results, outcomes) if o is None)
    assert {"runs.parquet", "cross.parquet", "top_k.parquet", "tracked.parquet", "metadata.json",
            "figures"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_many_saves_racing_at_the_rename_leave_one_complete_result(store, tmp_path, overwrite):
    out, n = tmp_path / "out", 6
    if overwrite:
        store.publish(out, lambda f: (f / "who").write_text("before"), kind="comparison")
    barrier = threading.Barrier(n)

    def write(number):
        def fill(folder):
            (folder / "who").write_text(str(number))
            (folder / "payload").write_text(str(number) * 1000)
            barrier.wait(timeout=60)
        return fill

    outcomes = [None] * n

    def run(k):
        try:
            store.publish(out, write(k), kind="comparison", overwrite=overwrite)
        except BaseException as err:  # anything but FileExistsError fails the test below
            outcomes[k] = err

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(err, FileExistsError) for err in outcomes if err is not None), outcomes
    winners = [k for k in range(n) if outcomes[k] is None]
    who = (out / "who").read_text()
    assert who in {str(k) for k in winners}
    assert (out / "payload").read_text() == who * 1000
    if not overwrite:
        assert len(winners) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# (c): only our own results are ever replaced

def test_overwrite_refuses_a_folder_it_did_not_write_and_touches_nothing(results, tmp_path):
    home = tmp_path / "home"
    (home / "projects").mkdir(parents=True)
    (home / "notes.txt").write_text("precious")
    (home / "projects" / "thesis.tex").write_text("more precious")
    before = files(home)
    with pytest.raises(FileExistsError, match=r"directory: .*home is not a result of this package"):
        results[0].save(home, overwrite=True)
    assert files(home) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_overwrite_refuses_a_result_of_another_kind(store, results, tmp_path):
    out = store.publish(tmp_path / "out", lambda f: (f / "a.txt").write_text("suites"), kind="prompt suites")
    before = files(out)
    with pytest.raises(FileExistsError, match="holds a prompt suites, not a comparison"):
        results[0].save(out, overwrite=True)
    assert files(out) == before


def test_overwrite_may_replace_an_empty_folder(store, tmp_path):
    (tmp_path / "out").mkdir()
    store.publish(tmp_path / "out", lambda f: (f / "result").write_text("new"), kind="comparison", overwrite=True)
    assert (tmp_path / "out" / "result").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_a_previous_result(results, tmp_path):
    out = results[0].save(tmp_path / "out")
    results[1].save(out, overwrite=True)
    pd.testing.assert_frame_equal(frame(out), results[1].to_frame(), check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# (d): a failure while writing changes nothing

def disk_full(figure, *args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_save_failing_midway_leaves_no_folder(results, tmp_path, monkeypatch):
    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space left"):
        results[0].save(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_save_failing_midway_keeps_the_previous_result(results, tmp_path, monkeypatch):
    out = results[0].save(tmp_path / "out")
    before = files(out)
    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space left"):
        results[1].save(out, overwrite=True)
    assert files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupt_during_the_swap_puts_the_old_result_back(results, tmp_path, monkeypatch):
    out = results[0].save(tmp_path / "out")
    before = files(out)
    real_rename, interrupts = os.rename, [KeyboardInterrupt]

    def interrupted(src, dst):
        if Path(dst) == out and not out.exists() and interrupts:  # old result aside, new one not yet in
            raise interrupts.pop()
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        results[1].save(out, overwrite=True)
    monkeypatch.undo()
    assert files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# (e): a save killed outright is finished by the next one

KILLED_MID_SWAP = r"""
import os, signal, sys
from pathlib import Path
from compare.base import store

target = Path(sys.argv[1])

def dies_between_the_renames(real):
    def rename(src, dst):
        if Path(dst) == target and not target.exists():  # old result aside, new one not yet in
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    return rename

os.rename, os.replace = dies_between_the_renames(os.rename), dies_between_the_renames(os.replace)
store.publish(target, lambda folder: (folder / "new.txt").write_text("new"), kind="comparison",
              overwrite=True)
"""


@pytest.fixture
def killed_mid_swap(results, tmp_path):
    """`out` after a save replacing results[0] there was killed between its two renames."""
    out = results[0].save(tmp_path / "out")
    child = subprocess.run([sys.executable, "-c", KILLED_MID_SWAP, str(out)], capture_output=True, text=True,
                           cwd=Path(__file__).parents[2], timeout=120)
    assert child.returncode == -9, child.stderr
    assert not out.exists() and len(hidden(tmp_path)) == 2  # the new result staged, the old one aside
    return out


def test_the_next_save_after_a_kill_restores_the_old_result_first(results, killed_mid_swap):
    out = killed_mid_swap
    with pytest.raises(FileExistsError, match="already exists"):
        results[1].save(out)
    pd.testing.assert_frame_equal(frame(out), results[0].to_frame(), check_dtype=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_the_next_overwriting_save_after_a_kill_replaces_and_cleans_up(results, killed_mid_swap):
    out = killed_mid_swap
    results[1].save(out, overwrite=True)
    pd.testing.assert_frame_equal(frame(out), results[1].to_frame(), check_dtype=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_recover_removes_dead_leftovers_and_keeps_everything_else(store, tmp_path, dead_pid):
    out = store.publish(tmp_path / "out", lambda f: (f / "result").write_text("current"), kind="comparison")
    ours = {"old": f".out.old-{dead_pid}-0a1b", "new": f".out.new-{dead_pid}-2c3d",
            "empty": f".out.new-{dead_pid}-4e5f"}
    for name in ours.values():
        (tmp_path / name).mkdir()
    for name in (ours["old"], ours["new"]):
        (tmp_path / name / store.MARKER).write_text('{"kind": "comparison"}')
    kept = {"live": f".out.new-{os.getpid()}-6a7b",  # a save in progress in this process
            "unmarked": f".out.old-{dead_pid}-8c9d",  # not ours: no marker
            "other": f".other.old-{dead_pid}-0e1f"}  # beside another folder
    for name in kept.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "data").write_text("keep")
    store.recover(out)
    assert hidden(tmp_path) == sorted(kept.values())
    assert (out / "result").read_text() == "current"


# (f): paths that name no folder we may write

@pytest.mark.parametrize("directory", [".", "", ".."])
def test_a_path_naming_no_new_folder_is_refused(results, tmp_path, monkeypatch, directory):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"directory: .* names no folder of its own; allowed values"):
        results[0].save(directory, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("name, match", [
    ("a\x00b", "NUL"),  # os.stat said only "embedded null byte"
    ("a\udcffb", "lone surrogate"),  # a non-UTF-8 byte from os.listdir: pyarrow failed after the work
    ("n" * 240, "folder name is 240 bytes"),  # legal, but its staging name is not: mkdir said "too long"
])
def test_a_folder_name_the_save_cannot_write_is_refused_before_writing(results, tmp_path, name, match):
    with pytest.raises(ValueError, match=rf"directory: .*{match}.*allowed values"):
        results[0].save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_a_parent_that_is_a_file_is_refused(results, tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(NotADirectoryError, match=r"directory: .*notes.txt is a file, not a folder"):
        results[0].save(tmp_path / "notes.txt" / "sub" / "out")
    assert files(tmp_path) == {"notes.txt": b"keep"}


def test_a_path_that_is_not_a_path_is_refused(results):
    with pytest.raises(TypeError, match=r"directory: must be a path"):
        results[0].save(3)


def test_a_parent_we_may_not_write_is_refused_naming_the_argument(results, tmp_path, monkeypatch):
    # Tests run as root, which permission bits do not stop: make mkdir refuse, as a read-only
    # parent does for everyone else.
    def read_only(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(PermissionError, match=r"directory: cannot create a folder in .* allowed values"):
        results[0].save(tmp_path / "sub" / "out")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_parent_is_refused_before_anything_is_written(results, tmp_path, monkeypatch):
    # As above: the access check answers as it does for a user in a read-only folder.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(PermissionError, match=r"directory: cannot create a folder in .*permission denied"):
        results[0].save(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs, where nobody may create folders")
def test_a_parent_in_a_filesystem_nobody_may_write_is_refused(results):
    with pytest.raises(PermissionError, match=r"directory: cannot create a folder in /sys"):
        results[0].save("/sys/no-such-folder/out")


# datasets_gen.save shares the rules

def test_dataset_save_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    datasets = pytest.importorskip("datasets")
    from datasets_gen import export

    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    dataset = datasets.DatasetDict({"natural": datasets.Dataset.from_dict({"text": ["a"]})})
    with pytest.raises(FileExistsError, match=r"out: .*home is not a result of this package"):
        export.save(dataset, out, overwrite=True)
    assert files(out) == {"notes.txt": b"precious"}
    assert [p.name for p in tmp_path.iterdir()] == ["home"]

