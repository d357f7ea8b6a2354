"""`python -m compare`: the table it prints, the files it writes, the errors it reports."""
import subprocess
import sys

import pytest

from compare.cli import main

TEXT = "When Mary and John went to the store , John gave a drink to"


@pytest.fixture
def sources(tiny_dirs):
    dirs, _ = tiny_dirs
    return [str(dirs["mamba"]), str(dirs["gpt2"])]


def test_prints_a_row_per_position_with_each_models_prediction(sources, capsys):
    assert main([TEXT, "--models", *sources, "--variant", "native", "--track", " Mary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["pos", "token", "mamba", "prediction", "(P)", "gpt2", "prediction", "(P)", "agree"]
    assert len(lines) == 1 + len(TEXT.split())
    assert lines[1].startswith("0    'When'")


def test_writes_data_and_figures_to_out(sources, tmp_path, capsys):
    assert main(["Mary and John", "--models", *sources, "--variant", "same_ids", "--out", str(tmp_path / "o")]) == 0
    assert {"runs.parquet", "cross.parquet", "metadata.json", "figures"} <= {p.name for p in (tmp_path / "o").iterdir()}
    assert "wrote" in capsys.readouterr().out


def test_accepts_token_ids(sources, capsys):
    assert main(["2, 3, 4", "--ids", "--models", *sources, "--variant", "same_ids"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


@pytest.mark.parametrize("args, message", [
    (["", "--variant", "native"], "prompt: must be a non-empty string"),
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
