"""Export of built suites: determinism to the byte, round trips, atomic writes, card, CLI, push."""

import json
from pathlib import Path

import pytest

from conftest import SHARED_TOKENIZERS as TOKENIZERS
if not TOKENIZERS.is_dir():
    pytest.skip(f"real tokenizers not found at {TOKENIZERS.resolve()}", allow_module_level=True)

import datasets  # noqa: E402
import yaml  # noqa: E402

import datasets_gen  # noqa: E402
from datasets_gen import export  # noqa: E402
from datasets_gen.__main__ import main  # noqa: E402

PATHS = {"mamba": str(TOKENIZERS / "gpt-neox-20b"), "gpt2": str(TOKENIZERS / "gpt2")}
SIZES = {"natural": 6, "monotone": 3, "periodic": 3, "repeated_random": 3}
CLI_TOKENIZERS = [f"--tokenizer={m}={p}" for m, p in PATHS.items()]


@pytest.fixture(scope="module")
def suites():
    return datasets_gen.build(seed=3, sizes=SIZES, tokenizers=PATHS)


@pytest.fixture(scope="module")
def saved(suites, tmp_path_factory):
    return datasets_gen.save(suites, tmp_path_factory.mktemp("saved") / "suites")


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_one_split_per_suite_with_explicit_features(suites):
    assert list(suites) == ["natural", "monotone", "periodic", "repeated_random"]
    assert {s: ds.num_rows for s, ds in suites.items()} == SIZES
    for ds in suites.values():
        assert ds.features == datasets_gen.features()


def test_two_builds_give_identical_files_byte_for_byte(saved, tmp_path):
    again = datasets_gen.save(datasets_gen.build(seed=3, sizes=SIZES, tokenizers=PATHS),
                              tmp_path / "suites")
    first, second = files(saved), files(again)
    assert sorted(first) == sorted(second)
    assert [n for n in first if n.endswith(".parquet")] == [
        f"data/{s}-00000-of-00001.parquet" for s in sorted(SIZES)]
    assert first == second


def test_round_trip_through_load_from_disk(suites, saved):
    loaded = datasets.load_from_disk(str(saved))
    for split, ds in suites.items():
        assert loaded[split].features == ds.features
        assert loaded[split].to_list() == ds.to_list()


def test_round_trip_through_parquet(suites, saved, tmp_path):
    for split, ds in suites.items():
        path = saved / "data" / f"{split}-00000-of-00001.parquet"
        loaded = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path))
        assert loaded.features == ds.features
        assert loaded.to_list() == ds.to_list()


def test_card_has_yaml_metadata_suites_parameters_and_citation(saved):
    card = (saved / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "apache-2.0"
    assert meta["configs"][0]["data_files"] == [
        {"split": s, "path": f"data/{s}-00000-of-00001.parquet"} for s in SIZES]
    assert all(f"| {s} | {n} |" in body for s, n in SIZES.items())
    assert "with seed 3" in body and "@misc{" in body
    assert "--seed 3 --suites natural monotone periodic repeated_random" in body


def test_existing_output_is_refused_without_overwrite(suites, saved):
    with pytest.raises(FileExistsError, match="out: .* already exists.*overwrite"):
        datasets_gen.save(suites, saved)


def test_interrupted_save_leaves_no_dataset_and_no_temp_files(suites, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "write_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        datasets_gen.save(suites, tmp_path / "suites")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_dataset(suites, saved, tmp_path, monkeypatch):
    out = datasets_gen.save(suites, tmp_path / "suites")
    before = files(out)
    monkeypatch.setattr(export, "render_card", lambda dataset: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        datasets_gen.save(suites, out, overwrite=True)
    assert files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["suites"]


def test_overwrite_replaces_the_dataset(suites, tmp_path):
    out = datasets_gen.save(suites, tmp_path / "suites")
    (out / "stale.txt").write_text("old")
    datasets_gen.save(suites, out, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert datasets.load_from_disk(str(out))["natural"].num_rows == SIZES["natural"]


def test_push_to_hub_offline_fails_with_a_clear_message(saved, monkeypatch):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    with pytest.raises(RuntimeError, match=r"could not upload .* to me/suites.*push it later"):
        datasets_gen.push_to_hub(saved, "me/suites")


@pytest.mark.parametrize("repo_id", ["suites", "a/b/c", "/x"])
def test_push_to_hub_rejects_bad_repo_ids(saved, repo_id):
    with pytest.raises(ValueError, match="repo_id: .*'owner/name'"):
        datasets_gen.push_to_hub(saved, repo_id)


def test_cli_build_writes_a_loadable_dataset_with_custom_prompts(tmp_path):
    out = tmp_path / "cli"
    argv = ["build", "--out", str(out), "--seed", "0", "--suites", "periodic", "--size",
            "periodic=2", "--text", "hello world", "--ids", "42,69", "--no-progress"]
    assert main(argv + CLI_TOKENIZERS) == 0
    loaded = datasets.load_from_disk(str(out))
    assert list(loaded) == ["periodic", "custom"]
    assert loaded["custom"][1]["gpt2_aligned_ids"] == [40, 67]
    assert json.loads(loaded["periodic"][0]["params"])["seed"] == 0


@pytest.mark.parametrize("args, message", [
    (["--size", "periodic=x"], "--size periodic: 'x' is not an integer"),
    (["--size", "periodic=-1"], "sizes['periodic']: must be an integer ≥ 1"),
    (["--tokenizer", "mamba"], "--tokenizer: 'mamba' is not KEY=VALUE"),
    (["--ids", "42,x"], "--ids: ['42,x'] must be comma-separated integers"),
])
def test_cli_bad_input_exits_2_with_the_field_named(tmp_path, capsys, args, message):
    argv = ["build", "--out", str(tmp_path / "o"), "--suites", "periodic", "--no-progress"]
    assert main(argv + CLI_TOKENIZERS + args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_unknown_suite_lists_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["build", "--out", str(tmp_path / "o"), "--suites", "nope"])
    assert exit.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_cli_refuses_existing_output_before_building(tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path)] + CLI_TOKENIZERS) == 2
    assert "already exists" in capsys.readouterr().err
