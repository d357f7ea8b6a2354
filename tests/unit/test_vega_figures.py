"""The Compare tab's figures as Vega-Lite specifications: the frame's numbers, the matplotlib figures' panels."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from compare.figures import vega
from compare.figures.base import token_label

MODELS = ("mamba", "gpt2")


def tracked(positions=3, K=lambda t: 1.0 + t):
    rows = [{"model": m, "tracked": label, "position": t, "L": 10.0 * t + i, "K": K(t), "P": 0.1 * (t + 1)}
            for m in MODELS for i, label in enumerate((" Mary", " John")) for t in range(positions)]
    return pd.DataFrame(rows)


def as_json(spec):
    return json.loads(json.dumps(spec, allow_nan=False))  # what the page receives: strict JSON


def k_row(spec):
    return spec["vconcat"][1]["spec"]


def test_trajectories_carry_every_value_of_the_frame():
    frame = tracked()
    spec = as_json(vega.trajectories(frame))
    got = {(v["model"], v["tracked"], v["position"]): (v["L"], v["K"], v["P"]) for v in spec["data"]["values"]}
    assert got == {(r.model, r.tracked, r.position): (r.L, r.K, r.P) for r in frame.itertuples()}


def test_trajectories_have_rows_l_k_p_and_a_column_per_model_in_order():
    spec = vega.trajectories(tracked().iloc[::-1])  # the frame's first-seen order is kept
    assert [row["spec"]["encoding"]["y"]["field"] for row in spec["vconcat"]] == ["L", "K", "P"]
    assert all(row["facet"]["column"]["sort"] == ["gpt2", "mamba"] for row in spec["vconcat"])
    assert spec["title"]["text"] == vega.TRACKED_TITLE
    assert [row["spec"]["encoding"]["x"]["axis"]["labels"] for row in spec["vconcat"]] == [False, False, True]


def test_trajectories_label_positions_with_their_tokens_literally():
    hostile = ["$x^2$", "a_b", " Mary"]
    spec = vega.trajectories(tracked(), tokens={m: hostile for m in MODELS})
    labels = {v["label"] for v in spec["data"]["values"]}
    assert labels == {"0: '$x^2$'", "1: 'a_b'", "2: ' Mary'"} == {f"{t}: {token_label(x)}" for t, x in enumerate(hostile)}
    assert {v["label"] for v in vega.trajectories(tracked())["data"]["values"]} == {"0", "1", "2"}


def test_non_finite_values_are_null():
    frame = tracked()
    frame.loc[0, "L"], frame.loc[1, "K"] = np.nan, np.inf
    values = as_json(vega.trajectories(frame, k_scale="linear"))["data"]["values"]
    assert values[0]["L"] is None and values[1]["K"] is None and values[2]["L"] == 20.0


@pytest.mark.parametrize("scale", ["linear", "symlog", "log"])
def test_trajectories_put_k_on_the_scale_asked_for(scale):
    row = k_row(vega.trajectories(tracked(), k_scale=scale))
    assert row["encoding"]["y"]["scale"].get("type", "linear") == scale
    assert row["encoding"]["y"]["title"] == f"K ({scale})"
    assert (row.get("transform") == [{"filter": "datum.K > 0"}]) == (scale == "log")  # log: positive K only


def test_trajectories_default_to_symlog_when_k_spans_orders_of_magnitude():
    wide = k_row(vega.trajectories(tracked(K=lambda t: 10.0 ** (2 * t + 1))))
    narrow = k_row(vega.trajectories(tracked()))
    assert wide["encoding"]["y"]["scale"] == {"type": "symlog", "constant": 1}
    assert wide["encoding"]["y"]["axis"]["values"] == [0, 1, 10, 100, 1e3, 1e4, 1e5]  # K is 10 … 1e5
    assert narrow["encoding"]["y"]["scale"].get("type", "linear") == "linear"
    with pytest.raises(ValueError, match="k_scale must be"):
        vega.trajectories(tracked(), k_scale="loglog")


def test_cross_model_carries_the_frame_and_reports_the_agreement_rate():
    frame = pd.DataFrame({"model": "mamba", "other": "gpt2", "position": [0, 1, 2, 3], "js": [0.1, 0.2, math.nan, 0.4],
                          "agree": [True, False, False, False], "split": [False, True, False, False]})
    spec = as_json(vega.cross_model(frame))
    (panel,) = spec["hconcat"]
    assert panel["title"] == "mamba vs gpt2: agreement 25%"
    assert [(v["position"], v["js"], v["agree"], v["split"]) for v in panel["data"]["values"]] == [
        (0, 0.1, True, False), (1, 0.2, False, True), (2, None, False, False), (3, 0.4, False, False)]
    line, agree, split = panel["layer"]
    assert agree["transform"] == [{"filter": "datum.agree"}] and split["transform"] == [{"filter": "datum.split"}]
    assert [layer["encoding"]["color"]["datum"] for layer in panel["layer"]] == list(vega.CROSS_SERIES)
    assert panel["layer"][0]["encoding"]["color"]["scale"]["domain"] == list(vega.CROSS_SERIES)
    assert panel["layer"][0]["encoding"]["y"]["scale"]["domain"] == [0, 1]


def test_cross_model_has_a_panel_per_pair():
    frame = pd.DataFrame({"model": "mamba", "other": ["gpt2", "gpt2", "pythia"], "position": [0, 1, 0],
                          "js": [0.1, 0.2, 0.3], "agree": [True, True, False], "split": False})
    assert [p["title"] for p in vega.cross_model(frame)["hconcat"]] == [
        "mamba vs gpt2: agreement 100%", "mamba vs pythia: agreement 0%"]
    # no split token anywhere, no agreement with pythia: those marks are left out, not drawn empty
    assert [len(p["layer"]) for p in vega.cross_model(frame)["hconcat"]] == [2, 1]


def test_symlog_ticks_are_the_powers_of_ten_on_each_side_that_k_reaches():
    assert vega.symlog_ticks([-250.0, 3.0, np.nan]) == [-1000, -100, -10, -1, 0, 1, 10, 100, 1000]
    assert vega.symlog_ticks([0.5, 0.2]) == [0, 1]
