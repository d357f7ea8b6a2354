"""`python -m compare` (and `python -m datasets_gen build`'s errors): the table it prints, the
files it writes, the errors it reports."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compare.cli import main
from conftest import SHARED_TOKENIZERS
from datasets_gen.__main__ import main as datasets_gen_main

TEXT = "When Mary and John went to the store , John gave a drink to"


@pytest.fixture
def sources(tiny_dirs):
    dirs, _ = tiny_dirs
    return [str(dirs["mamba"]), str(dirs["gpt2"])]


def test_prints_a_row_per_position_with_each_models_prediction(sources, capsys):
    assert main([TEXT, "--models", *sources, "--variant", "native", "--track", " Mary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["pos", "token", "mamba", "prediction", "(P)", "gpt2", "prediction", "(P)", "agree"]
    assert len(lines) == 1 + len(TEXT.split()) + 1  # header, a row per position, the summary
    assert lines[1].startswith("0    'When'")
    # the tiny checkpoints ship one tokenizer (`Comparison.summary`)
    assert lines[-1].startswith("gpt2 reads mamba's tokenizer: the variants coincide")


def test_writes_data_and_figures_to_out(sources, tmp_path, capsys):
    assert main(["Mary and John", "--models", *sources, "--variant", "same_ids", "--out", str(tmp_path / "o")]) == 0
    assert {"runs.parquet", "cross.parquet", "metadata.json", "figures"} <= {p.name for p in (tmp_path / "o").iterdir()}
    assert "wrote" in capsys.readouterr().out


def test_accepts_token_ids(sources, capsys):
    assert main(["2, 3, 4", "--ids", "--models", *sources, "--variant", "same_ids"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 3 + 1


@pytest.mark.parametrize("args, message", [
    (["", "--variant", "native"], "prompt: must hold text other than whitespace"),
    ([TEXT, "--variant", "native", "--track", "Mary John"], "2 tokens in mamba's tokenizer"),
    (["2, x", "--ids"], "with --ids, give integers"),
])
def test_bad_input_exits_2_with_the_reason(sources, capsys, args, message):
    assert main([args[0], "--models", *sources, *args[1:]]) == 2
    assert message in capsys.readouterr().err


def test_an_unknown_variant_is_refused_by_the_parser(sources, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([TEXT, "--models", *sources, "--variant", "tokens"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_runs_as_a_module(sources):
    done = subprocess.run([sys.executable, "-m", "compare", "Mary", "--models", *sources, "--variant", "native"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "agree" in done.stdout


# User errors: exit 2 and one line on stderr, never a traceback (issue #11).

def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_an_out_under_a_file_is_one_line_before_any_model_runs(sources, tmp_path, monkeypatch, capsys):
    def no_models(*args, **kwargs):
        raise AssertionError("the output path is checked before the models run")

    monkeypatch.setattr("compare.cli.compare", no_models)
    (tmp_path / "notes.txt").write_text("keep")
    assert main(["Mary", "--models", *sources, "--out", str(tmp_path / "notes.txt" / "o")]) == 2
    assert "--out: " in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("out", [".", ""])
def test_an_out_naming_no_folder_is_one_line(sources, tmp_path, monkeypatch, out, capsys):
    monkeypatch.chdir(tmp_path)  # the buggy code would move the working folder aside
    assert main(["Mary", "--models", *sources, "--out", out, "--overwrite"]) == 2
    assert "names no folder" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_of_a_folder_we_did_not_write_is_one_line_and_touches_nothing(sources, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("precious")
    assert main(["Mary", "--models", *sources, "--out", str(tmp_path), "--overwrite"]) == 2
    assert "is not a result of this package" in one_error_line(capsys.readouterr().err)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_existing_result_without_overwrite_is_one_line_and_with_it_is_replaced(sources, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["Mary", "--models", *sources, "--variant", "native", "--out", out]) == 0
    assert main(["Mary", "--models", *sources, "--variant", "native", "--out", out]) == 2
    assert "already exists" in one_error_line(capsys.readouterr().err)
    assert main(["John", "--models", *sources, "--variant", "native", "--out", out, "--overwrite"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["o"]


def test_an_out_in_a_read_only_folder_is_one_line_before_any_model_runs(sources, tmp_path, monkeypatch, capsys):
    # Tests run as root, which permission bits do not stop: make the access check answer
    # as it does for a user in a read-only folder.
    monkeypatch.setattr("compare.cli.compare", lambda *args, **kwargs: pytest.fail("the models ran"))
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    assert main(["Mary", "--models", *sources, "--out", str(tmp_path / "o")]) == 2
    assert "--out: cannot create a folder in" in one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs, where nobody may create folders")
def test_an_out_nobody_may_write_is_one_line(sources, capsys):
    assert main(["Mary", "--models", *sources, "--variant", "native", "--out", "/sys/no-such-folder/o"]) == 2
    assert "cannot create a folder in /sys" in one_error_line(capsys.readouterr().err)


def test_a_model_that_cannot_be_loaded_is_one_line(sources, tmp_path, capsys):
    assert main(["Mary", "--models", str(tmp_path / "missing"), sources[1]]) == 2
    one_error_line(capsys.readouterr().err)


def test_a_user_error_in_a_real_process_exits_2_without_traceback(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    done = subprocess.run([sys.executable, "-m", "compare", "Mary", "--out", str(tmp_path / "notes.txt" / "o")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2
    assert "--out: " in one_error_line(done.stderr)


# The same for `python -m datasets_gen build`.

@pytest.fixture
def build_args():
    tokenizers = SHARED_TOKENIZERS.resolve()
    if not tokenizers.is_dir():
        pytest.skip(f"real tokenizers not found at {tokenizers}")
    return ["--suites", "periodic", "--size", "periodic=2", "--no-progress",
            f"--tokenizer=mamba={tokenizers / 'gpt-neox-20b'}", f"--tokenizer=gpt2={tokenizers / 'gpt2'}"]


@pytest.mark.parametrize("out, message", [
    ("notes.txt/o", "out: .*notes.txt is a file"), (".", "out: '.' names no folder"),
    ("", "out: '' names no folder")])
def test_datasets_gen_bad_out_is_one_line(build_args, tmp_path, monkeypatch, capsys, out, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep")
    assert datasets_gen_main(["build", "--out", out, "--overwrite", *build_args]) == 2
    assert re.search(message, one_error_line(capsys.readouterr().err))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_datasets_gen_overwrite_of_a_folder_it_did_not_write_is_one_line(build_args, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("precious")
    assert datasets_gen_main(["build", "--out", str(tmp_path), "--overwrite", *build_args]) == 2
    assert "is not a result of this package" in one_error_line(capsys.readouterr().err)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs, where nobody may create folders")
def test_datasets_gen_out_nobody_may_write_is_one_line(build_args, capsys):
    assert datasets_gen_main(["build", "--out", "/sys/no-such-folder/o", *build_args]) == 2
    assert "out: cannot create a folder in /sys" in one_error_line(capsys.readouterr().err)
