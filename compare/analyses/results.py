"""The results of `compare`: one `Run` per model, a `Comparison` per prompt, and how it is saved.

A `Comparison` holds every model's `Run` (L, K, P and what is derived from them) and the
cross-model frame at paired positions (`pairing`); its frames (`to_frame`, `top_k_frame`,
`tracked_frame`) are the tidy tables that `save` writes as Parquet beside metadata.json and the
standard figures.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..base import store
from ..base.jsonsafe import plain  # non-finite floats as "nan"/"inf": json.dumps writes bare NaN


@dataclass
class Trajectory:
    """One tracked token's L, K and P at every position of one model: each [T]."""

    token: str
    id: int
    L: np.ndarray
    K: np.ndarray
    P: np.ndarray


@dataclass
class Run:
    """One model's results on one prompt. Arrays are [T] or [T, V], V = the real vocabulary.

    `logits`, `k` and `probs` are None when `compare(..., keep_arrays=False)` kept only the
    summaries.
    """

    model: str
    family: str
    vocab_size: int
    ids: np.ndarray
    tokens: list[str]
    logits: np.ndarray | None  # L
    k: np.ndarray | None  # K
    probs: np.ndarray | None  # P
    prediction_ids: np.ndarray
    predictions: list[str]
    p_predictions: np.ndarray  # [T], P of each argmax
    tracked: dict[str, Trajectory]
    k_stats: pd.DataFrame  # position, mean, variance, skew, r_id_L, r_logid_L, L_mean, L_std, n_outliers, tail_bump, outliers
    variance_trend: dict[str, float]
    lock_in: int | None  # None also when the prompt is not periodic
    top_k_ids: np.ndarray  # [T, TOP_K], most probable first
    top_k_probs: np.ndarray
    top_k_tokens: list[list[str]]


@dataclass
class Comparison:
    """The result of `compare` on one prompt: `runs` by model name, `cross` by paired position.

    same_tokenizer: the other models that read the first model's tokenizer (Pythia beside Mamba):
    for them the three variants coincide and the cross metrics cover the whole vocabulary.
    run_time_ids: the models a suite row has no columns for (a hybrid's own tokenizer): their IDs,
    target and pairs were tokenised from the row's text at run time (`rows`), not read from the suite.
    """

    prompt: Any
    variant: str
    runs: dict[str, Run]
    cross: pd.DataFrame
    seed: int | None = None
    tokenizer_tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    k_columns: str = "vocab"
    same_tokenizer: tuple[str, ...] = ()
    run_time_ids: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line per other model: how it is paired with the first, and over which tokens."""
        first, *others = self.runs.values()
        lines = []
        for run in others:
            if run.model in self.same_tokenizer:
                lines.append(f"{run.model} reads {first.model}'s tokenizer: the variants coincide, every position "
                             f"pairs with itself, and the cross metrics cover the whole vocabulary "
                             f"({run.vocab_size:,} tokens)")
            else:
                lines.append(f"{run.model} and {first.model} read different tokenizers: variant {self.variant!r}, "
                             "cross metrics at paired positions over the token strings both vocabularies share")
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """One row per (model, position): token, prediction, P, K statistics, tracked L/K/P."""
        frames = []
        for run in self.runs.values():
            frame = pd.DataFrame({
                "model": run.model, "position": np.arange(len(run.ids)), "token_id": run.ids,
                "token": run.tokens, "prediction_id": run.prediction_ids, "prediction": run.predictions,
                "p_prediction": run.p_predictions})
            frame = frame.merge(run.k_stats, on="position")
            for label, trajectory in run.tracked.items():
                for quantity in ("L", "K", "P"):
                    frame[f"{quantity}[{label}]"] = getattr(trajectory, quantity)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def top_k_frame(self) -> pd.DataFrame:
        """One row per (model, position, rank): the candidate token and its probability."""
        rows = [{"model": run.model, "position": t, "token": run.tokens[t], "rank": rank + 1,
                 "candidate_id": int(run.top_k_ids[t, rank]), "candidate": run.top_k_tokens[t][rank],
                 "p": float(run.top_k_probs[t, rank])}
                for run in self.runs.values() for t in range(len(run.ids)) for rank in range(run.top_k_ids.shape[1])]
        return pd.DataFrame(rows)

    def tracked_frame(self) -> pd.DataFrame:
        """Long form of the trajectories: model, tracked, id, token, position, L, K, P.

        id and token are the model's own: the ID it tracks (under same_ids the first model's ID,
        the one every model is fed) and that ID's text in its tokenizer, which can differ per model.
        """
        rows = [pd.DataFrame({"model": run.model, "tracked": label, "id": tr.id, "token": tr.token,
                              "position": np.arange(len(tr.L)), "L": tr.L, "K": tr.K, "P": tr.P})
                for run in self.runs.values() for label, tr in run.tracked.items()]
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
            columns=["model", "tracked", "id", "token", "position", "L", "K", "P"])

    def figures(self) -> dict[str, Any]:
        """The standard figures by file stem (plain matplotlib Figures, see `compare.figures.base`).

        The K-distribution and flattened-L figures need the [T, V] arrays: without them
        (`keep_arrays=False`) they are left out.
        """
        from ..figures import base as figures

        names = list(self.runs)
        tokens = {n: self.runs[n].tokens for n in names}
        out = {"top_k": figures.top_k_table(self.top_k_frame())}
        if all(run.k is not None for run in self.runs.values()):
            out["k_distributions"] = figures.k_distributions({n: self.runs[n].k for n in names}, tokens)
            out["flattened_logits"] = figures.flattened_logits({n: self.runs[n].logits for n in names},
                                                               tokens=tokens)
        if any(run.tracked for run in self.runs.values()):
            out["trajectories"] = figures.trajectories(self.tracked_frame(), tokens=tokens)
        if len(self.cross):
            out["cross"] = figures.cross_model(self.cross)
        if self.tokenizer_tables:
            out["tokenizer"] = figures.tokenizer_scatter(self.tokenizer_tables)
        return out

    def metadata(self) -> dict[str, Any]:
        from importlib.metadata import version

        import transformers

        prompt = self.prompt if isinstance(self.prompt, (str, list)) else str(self.prompt)
        return {"models": {n: {"family": r.family, "vocab_size": r.vocab_size}
                           for n, r in self.runs.items()},
                "variant": self.variant, "k_columns": self.k_columns, "seed": self.seed, "prompt": prompt,
                "same_tokenizer": list(self.same_tokenizer), "run_time_ids": list(self.run_time_ids),
                "lock_in": {n: r.lock_in for n, r in self.runs.items()},
                "variance_trend": {n: r.variance_trend for n, r in self.runs.items()},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "nnsight": version("nnsight"), "mamba-gpt2-compare": store.package_version()}}

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write runs/cross/top_k/tracked Parquet, metadata.json and figures/*.png to `directory`.

        The folder appears complete or not at all, and overwrite=True replaces only a previous
        comparison, never other files (`compare.base.store` states the guarantee).
        """
        def write(folder: Path) -> None:
            self.to_frame().to_parquet(folder / "runs.parquet", engine="pyarrow")
            self.cross.to_parquet(folder / "cross.parquet", engine="pyarrow")
            self.top_k_frame().to_parquet(folder / "top_k.parquet", engine="pyarrow")
            self.tracked_frame().to_parquet(folder / "tracked.parquet", engine="pyarrow")
            (folder / "metadata.json").write_text(json.dumps(plain(self.metadata()), indent=2, allow_nan=False,
                                                                default=_json_default))
            (folder / "figures").mkdir()
            for stem, figure in self.figures().items():
                figure.savefig(folder / "figures" / f"{stem}.png", dpi=150, bbox_inches="tight")

        return store.publish(directory, write, kind="comparison", overwrite=overwrite)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
