"""compare.study: a small study on the tiny models, checked against direct calls of the analyses;
resuming, crashes in the write, bad input; the same study on a local Ray instance (marked `ray`),
with a worker killed mid-study and a task that kills every worker it runs on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from compare import channel_sensitivity, compare, noise_sweep, study
from compare.__main__ import main
from compare.study import results
from conftest import one_thread, rows_of

PROMPTS = ["When Mary and John went to the store , John gave a drink to", "the cat runs to the dog"]
LABELS = ("compare", "noise_sweep", "channel_sensitivity")
NOISE = {"component": "resid_post", "target": "Mary", "layers": [0, 1], "levels": [0.0, 0.5, 2.0], "trials": 2}
CHANNELS = {"component": "resid_post", "target": "Mary", "layer": 1, "level": 1.0, "trials": 2}


def make_spec(dirs, **changes):
    spec = {"prompts": PROMPTS, "models": [str(dirs["mamba"]), str(dirs["gpt2"])], "seed": 7, "device": "cpu",
            "analyses": [{"analysis": "compare", "track": ["Mary"]},
                         {"analysis": "noise_sweep", **NOISE},
                         {"analysis": "channel_sensitivity", **CHANNELS}]}
    return {**spec, **changes}


@pytest.fixture(scope="module")
def spec(tiny_dirs):
    return make_spec(tiny_dirs[0])


@pytest.fixture(scope="module")
def embedded(spec, tmp_path_factory):
    """The uninterrupted embedded run every other run is held against: {label: rows}."""
    out = tmp_path_factory.mktemp("embedded") / "study"
    summary = study.run(spec, out, progress=False)
    assert (summary.done, summary.total, summary.failed) == (10, 10, [])
    return {label: study.read(out, label) for label in LABELS}


def assert_same_dataset(out, expected):
    for label in LABELS:
        pd.testing.assert_frame_equal(study.read(out, label), expected[label], check_exact=True)


# --- values against direct calls --------------------------------------------------------------

def test_compare_rows_are_compare_to_frame_with_cross_metrics_on_the_other_models_rows(embedded, tiny):
    handles, _ = tiny
    for i, prompt in enumerate(PROMPTS):
        with one_thread():
            direct = compare(prompt, models=[handles["mamba"], handles["gpt2"]], track=["Mary"], progress=False)
        got = rows_of(embedded["compare"], f"compare/mamba+gpt2/p{i:06d}")
        expected = direct.to_frame()
        got["outliers"] = got["outliers"].map(list)  # Parquet reads a list column back as arrays
        pd.testing.assert_frame_equal(got[list(expected.columns)], expected, check_exact=True, check_dtype=False)
        # the reference model's rows carry no cross metrics; gpt2's carry them at paired positions
        assert got.loc[got["model"] == "mamba", "js"].isna().all()
        cross = got[got["model"] == "gpt2"].dropna(subset=["js"]).set_index("position")
        paired = direct.cross.set_index("other_position")
        assert list(cross.index) == list(paired.index)
        assert (cross["js"] == paired["js"]).all() and (cross["agree"] == paired["agree"]).all()
        assert list(cross["ref_position"]) == list(paired["position"])


@pytest.mark.parametrize("label, analysis, params", [("noise_sweep", noise_sweep, NOISE),
                                                     ("channel_sensitivity", channel_sensitivity, CHANNELS)])
def test_seeded_analysis_rows_equal_a_direct_call_with_the_task_seed(embedded, tiny, label, analysis, params):
    handles, _ = tiny
    for model in ("mamba", "gpt2"):
        for i, prompt in enumerate(PROMPTS):
            key = f"{label}/{model}/p{i:06d}"
            seed = study.task_seed(7, key)
            with one_thread():
                direct = analysis(prompt, model=handles[model], seed=seed, **params)
            frame = embedded[label]
            assert set(frame.loc[frame["task"] == key, "seed"]) == {seed}
            pd.testing.assert_frame_equal(rows_of(frame, key), direct, check_exact=True, check_dtype=False)


def test_noise_rows_keep_their_draws_for_phase_transition(embedded, tiny):
    """The sweep's attrs do not survive the files: its `draws` goes in a column, which
    `phase_transition` reads (it took a study's fresh draws for rays: no interval under 8 trials)."""
    from compare import phase_transition

    frame = embedded["noise_sweep"]
    assert frame.attrs.get("draws") is None and set(frame["draws"]) == {"fresh"}
    fits = phase_transition(frame, n_boot=10)
    assert list(fits["prompt_index"].unique()) == [0, 1]
    assert not fits["status"].str.startswith("ci unreliable").any()


def test_suite_rows_run_each_model_on_its_own_ids_and_target(tiny_dirs, tiny, tmp_path):
    datasets = pytest.importorskip("datasets")
    handles, _ = tiny
    ids = {m: handles[m].encode(PROMPTS[0]) for m in ("mamba", "gpt2")}
    row = {"id": "natural-00000", "text": PROMPTS[0], "target": "Mary",
           **{f"{m}_native_ids": ids[m] for m in ids}, **{f"target_id_{m}": handles[m].encode("Mary")[0] for m in ids}}
    suite = datasets.Dataset.from_list([row])
    noise = {k: v for k, v in NOISE.items() if k != "target"}
    spec = make_spec(tiny_dirs[0], prompts=suite, analyses=[{"analysis": "noise_sweep", **noise}])
    frame = study.run(spec, tmp_path / "s", progress=False).read("noise_sweep")
    for model in ("mamba", "gpt2"):
        key = f"noise_sweep/{model}/p000000"
        with one_thread():
            direct = noise_sweep(ids[model], model=handles[model], target=row[f"target_id_{model}"],
                                 seed=study.task_seed(7, key), **noise)
        pd.testing.assert_frame_equal(rows_of(frame, key), direct, check_exact=True, check_dtype=False)


def test_task_seeds_depend_on_the_study_seed_and_the_task_key_only(spec):
    tasks = study.split(study.from_mapping(spec))
    assert [t.seed for t in tasks] == [study.task_seed(7, t.key) for t in tasks]
    assert len({t.seed for t in tasks}) == len(tasks)
    assert study.task_seed(8, tasks[0].key) != tasks[0].seed
    reordered = study.split(study.from_mapping({**spec, "analyses": spec["analyses"][::-1]}))
    assert {t.key: t.seed for t in reordered} == {t.key: t.seed for t in tasks}


def test_the_spec_and_package_versions_are_stored_with_the_results(spec, tmp_path):
    spec = {**spec, "analyses": spec["analyses"][:1], "prompts": PROMPTS[:1]}
    study.run(spec, tmp_path / "s", progress=False)
    manifest = json.loads((tmp_path / "s" / "_study.json").read_text())
    assert study.from_mapping(manifest["spec"]) == study.from_mapping(spec)
    assert manifest["digest"] == study.from_mapping(spec).digest() and manifest["tasks"] == 1
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["runs"][0]["executor"] == "embedded" and manifest["runs"][0]["threads"] == 1


# --- resuming, crashes, failures ----------------------------------------------------------------

class Interrupt(Exception):
    pass


def test_an_interrupted_study_resumes_where_it_stopped_and_touches_no_finished_file(spec, embedded, tmp_path):
    out, seen = tmp_path / "s", []

    def stop_after_five(p: study.Progress):
        seen.append(p)
        if p.done == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        study.run(spec, out, progress=False, callback=stop_after_five)
    files = sorted(p for p in out.rglob("*.parquet"))
    assert len(files) == 5 and [p.done for p in seen] == [1, 2, 3, 4, 5]
    assert all(p.total == 10 and p.eta is not None and p.seconds > 0 for p in seen)
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    summary = study.run(spec, out, progress=False)
    assert (summary.skipped, summary.done, summary.failed) == (5, 10, [])
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert_same_dataset(out, embedded)


def test_a_crash_inside_a_write_leaves_no_file_under_a_result_name(spec, embedded, tmp_path, monkeypatch):
    out = tmp_path / "s"
    written = []

    def half_then_crash(table, f):
        if len(written) == 2:
            f.write(b"PAR1 half a file")
            raise OSError("disk gone")
        written.append(table)
        return real(table, f)

    real = results.pq.write_table
    monkeypatch.setattr(results.pq, "write_table", half_then_crash)
    with pytest.raises(OSError, match="disk gone"):
        study.run(spec, out, progress=False)
    monkeypatch.undo()
    assert len(list(out.rglob("*.parquet"))) == 2
    assert not [p for p in out.rglob(".*") if p.name != results.MARKER]  # the temporary is gone too
    assert len(study.read(out, "compare")) == len(embedded["compare"])  # 2 finished compare tasks

    # a writer killed outright leaves its hidden temporary: the next run removes it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / "noise_sweep" / "mamba" / f".p000000.parquet.tmp-{int(dead.stdout)}-deadbeef"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"PAR1 half")
    assert study.run(spec, out, progress=False).skipped == 2
    assert not stale.exists()
    assert_same_dataset(out, embedded)


def test_a_failing_task_is_recorded_with_its_error_and_the_rest_goes_on(tiny_dirs, tmp_path):
    # "h" is a Mamba point only: GPT-2's tasks fail inside noise_sweep, Mamba's finish
    spec = make_spec(tiny_dirs[0], analyses=[{"analysis": "noise_sweep", **NOISE, "component": "h"}])
    summary = study.run(spec, tmp_path / "s", progress=False)
    assert summary.failed == ["noise_sweep/gpt2/p000000", "noise_sweep/gpt2/p000001"]
    assert sorted(p.name for p in (tmp_path / "s" / "noise_sweep" / "mamba").iterdir()) == ["p000000.parquet",
                                                                                            "p000001.parquet"]
    records = study.failures(tmp_path / "s")
    assert [r["task"] for r in records] == summary.failed
    assert all("component 'h'" in r["error"] and r["attempts"] == 1 and "Traceback" in r["traceback"] for r in records)
    again = study.run(spec, tmp_path / "s", progress=False)  # failed tasks are retried, finished ones skipped
    assert (again.skipped, again.failed) == (2, summary.failed)


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"analyses": [{"analysis": "patching"}]}, r"analyses\[0\]\.analysis: unknown analysis 'patching'"),
    # component is optional (each family's default, the calling convention); target is not
    ({"analyses": [{"analysis": "noise_sweep", "component": "h"}]}, r"analyses\[0\]: noise_sweep needs target"),
    ({"analyses": [{"analysis": "noise_sweep", **NOISE, "trials": "4"}]}, r"analyses\[0\]\.trials: must be an integer"),
    ({"analyses": [{"analysis": "noise_sweep", **NOISE, "levels": [0.1, -1]}]}, r"analyses\[0\]\.levels\[1\]"),
    ({"analyses": [{"analysis": "noise_sweep", **NOISE, "seed": 3}]}, r"analyses\[0\]\.seed: not a parameter"),
    ({"analyses": [{"analysis": "compare", "variant": "best"}]}, r"analyses\[0\]\.variant: 'best' is not allowed"),
    ({"analyses": [{"analysis": "compare", "colour": 1}]}, r"unknown parameter\(s\) \['colour'\]"),
    ({"analyses": ["compare", "compare"]}, r"label\(s\) \['compare'\] used twice"),
    ({"analyses": []}, r"analyses: must be a non-empty list"),
    ({"prompts": []}, r"prompts: empty"),
    ({"prompts": ["ok", ""]}, r"prompts\[1\]: must be a non-empty string"),
    ({"models": []}, r"models: must be a non-empty list"),
    ({"models": ["./a/gpt2", "/b/gpt2/"]}, r"models: \['gpt2'\] name more than one model"),
    ({"seed": -1}, r"seed: must be an integer ≥ 0"),
    ({"sead": 1}, r"spec: unknown field\(s\) \['sead'\]"),
])
def test_bad_specs_are_refused_naming_the_field(spec, tmp_path, change, field):
    with pytest.raises(study.SpecError, match=field):
        study.run({**spec, **change}, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_a_folder_holding_another_study_is_refused_unless_overwrite_and_then_only_its_files_go(spec, tmp_path):
    out = tmp_path / "s"
    first = {**spec, "analyses": spec["analyses"][:1], "prompts": PROMPTS[:1]}
    study.run(first, out, progress=False)
    (out / "notes.txt").write_text("mine")
    other = {**first, "seed": 8}
    with pytest.raises(FileExistsError, match="out: .* holds another study"):
        study.run(other, out, progress=False)
    study.run(other, out, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "_study.json").read_text())["spec"]["seed"] == 8


def test_a_non_empty_folder_that_is_no_study_is_never_touched(spec, tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "data.csv").write_text("1,2")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="holds no study"):
            study.run(spec, tmp_path / "s", progress=False, overwrite=overwrite)
    assert os.listdir(tmp_path / "s") == ["data.csv"]


@pytest.mark.parametrize("kwargs, message", [
    ({"executor": "dask"}, r"executor: unknown 'dask'; allowed values are embedded, ray"),
    ({"address": "auto"}, r"address: a Ray address string, only with executor='ray'"),
    ({"threads": 0}, r"threads: must be an integer ≥ 1"),
])
def test_bad_run_arguments_are_refused_naming_them(spec, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        study.run(spec, tmp_path / "s", progress=False, **kwargs)


# --- the command line ----------------------------------------------------------------------------

def test_cli_runs_a_yaml_spec_and_resumes_it(spec, tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    small = {**spec, "analyses": spec["analyses"][:2], "prompts": PROMPTS[:1]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(small, allow_unicode=True))
    assert main(["study", str(path), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert "3/3 tasks finished (0 before this run), 0 failed" in capsys.readouterr().out
    (tmp_path / "spec.json").write_text(json.dumps(small))
    assert main(["study", str(tmp_path / "spec.json"), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert "3/3 tasks finished (3 before this run)" in capsys.readouterr().out


def test_runs_that_overflow_are_rows_counted_by_the_study_and_its_cli(tiny_dirs, tiny, tmp_path, capsys):
    """Δ noise at 1e6 overflows the tiny Mamba: the tasks finish, their rows say finite=False,
    and the summary and the CLI count them; the expected count is each row's logits, one trace
    per overflowing run (noise_ref.traced_run)."""
    import warnings

    from compare.analyses.noise import prepare
    from compare.analyses.noise_ref import traced_run

    noise = {"component": "delta", "target": "Mary", "layers": [0, 1], "levels": [0.0, 0.5, 1e6], "trials": 2}
    channels = {"component": "delta", "target": "Mary", "layer": 0, "level": 3.0, "trials": 2, "scale": "absolute"}
    spec = make_spec(tiny_dirs[0], models=[str(tiny_dirs[0]["mamba"])], prompts=PROMPTS[:1],
                     analyses=[{"analysis": "noise_sweep", **noise}, {"analysis": "channel_sensitivity", **channels}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = study.run(spec, tmp_path / "s", progress=False)
    rows, ranked = summary.read("noise_sweep"), summary.read("channel_sensitivity")
    assert summary.failed == [] and len(rows) == 2 * 3 * 2
    sweep = prepare(PROMPTS[0], model=tiny[0]["mamba"], seed=study.task_seed(7, "noise_sweep/mamba/p000000"),
                    **noise)
    expected = [not bool(torch.isfinite(traced_run(sweep, layer, level, key)).all())
                for layer in (0, 1) for level, key in sweep.runs]
    assert (~rows["finite"]).tolist() == expected and sum(expected) > 0
    assert not rows.loc[~rows["finite"], "hit"].any()
    assert summary.overflowed == sum(expected) + ranked["overflowed"].sum() and ranked["overflowed"].sum() > 0
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["study", str(tmp_path / "spec.json"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert f"{summary.overflowed} noisy runs overflowed" in capsys.readouterr().out


def test_cli_prints_one_error_line_for_a_bad_spec(tmp_path, capsys):
    (tmp_path / "spec.json").write_text(json.dumps({"prompts": ["a"], "models": ["gpt2"],
                                                    "analyses": [{"analysis": "sweep"}]}))
    assert main(["study", str(tmp_path / "spec.json"), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith("error: analyses[0].analysis: unknown analysis 'sweep'")


# --- Ray ----------------------------------------------------------------------------------------

def kill_hook(arm_dir: str):
    """A Ray worker setup hook: a task whose key is in ARM/kill_once ends its worker process
    (os._exit) on its first attempt (leaving ARM/kill_once.fired), one in ARM/kill_always on
    every attempt. Test-only: it wraps `tasks.run` inside the workers, never in this process."""
    def hook():
        from compare.study import tasks

        original = tasks.run

        def run(task):
            for name in ("kill_once", "kill_always"):
                arm = os.path.join(arm_dir, name)
                if os.path.exists(arm) and Path(arm).read_text() == task.key:
                    if name == "kill_always" or not os.path.exists(arm + ".fired"):
                        Path(arm + ".fired").touch()
                        os._exit(1)
            return original(task)

        tasks.run = run
    return hook


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    ray = pytest.importorskip("ray")
    arm = tmp_path_factory.mktemp("arm")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": kill_hook(str(arm))})
    yield arm
    ray.shutdown()


@pytest.mark.ray
def test_ray_gives_the_embedded_rows_row_for_row(local_ray, spec, embedded, tmp_path):
    summary = study.run(spec, tmp_path / "s", executor="ray", progress=False)
    assert (summary.done, summary.failed) == (10, [])
    assert_same_dataset(tmp_path / "s", embedded)


@pytest.mark.ray
def test_a_worker_killed_mid_study_loses_nothing_and_duplicates_nothing(local_ray, spec, embedded, tmp_path):
    noise = {**spec, "analyses": [spec["analyses"][1]]}
    (local_ray / "kill_once").write_text("noise_sweep/gpt2/p000000")
    summary = study.run(noise, tmp_path / "s", executor="ray", progress=False)
    assert (local_ray / "kill_once.fired").exists()  # the worker did die
    assert (summary.done, summary.failed) == (4, [])
    pd.testing.assert_frame_equal(study.read(tmp_path / "s", "noise_sweep"), embedded["noise_sweep"], check_exact=True)


@pytest.mark.ray
def test_a_task_that_kills_every_worker_is_recorded_as_failed_after_its_retries(local_ray, spec, embedded, tmp_path):
    noise = {**spec, "analyses": [spec["analyses"][1]]}
    (local_ray / "kill_always").write_text("noise_sweep/mamba/p000001")
    try:
        summary = study.run(noise, tmp_path / "s", executor="ray", retries=1, progress=False)
    finally:
        (local_ray / "kill_always").unlink()
    assert summary.failed == ["noise_sweep/mamba/p000001"] and summary.done == 3
    (record,) = study.failures(tmp_path / "s")
    assert record["attempts"] == 2 and record["error"].startswith("worker lost on 2 attempts")
    expected = embedded["noise_sweep"]
    pd.testing.assert_frame_equal(study.read(tmp_path / "s", "noise_sweep"),
                                  expected[expected["task"] != record["task"]].reset_index(drop=True),
                                  check_exact=True)
