"""The bootstrap interval of `phase_transition` covers a known critical level (seeded simulation).

Each setting simulates 200 sweeps of the default shape (100 levels in [0, 1]) from a logistic
hit curve with midpoint C = 0.45, stacked as 200 layers of one frame, and counts how often the
nominal 95 % interval holds C. The two draw modes are simulated as what they are:
    fresh  every (level, trial) run is an independent Bernoulli draw from the curve;
    ray    each trial has one latent threshold θ ~ Logistic(C, w) (one noise direction) and
           hits at level x iff x < θ: monotone along the trial, P(hit | x) the same curve.
Level 0 always hits (it is the clean run). 90 % is the floor: with 200 experiments a true
coverage of 95 % lies above it with room to spare (binomial s.d. 1.5 %).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compare.measures.phase import MIN_RAY_TRIALS, phase_transition

C = 0.45
EXPERIMENTS = 200
LEVELS = np.linspace(0, 1, 100)  # noise_sweep's default
WIDTHS = [0.005, 0.03, 0.1]  # w: 10–90 % spans of 0.02 (inside two level steps), 0.13, 0.44


def simulate(draws: str, w: float, trials: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    if draws == "ray":
        u = rng.random((EXPERIMENTS, 1, trials))
        hit = LEVELS[None, :, None] < C + w * np.log(u / (1 - u))
    else:
        p = 1 / (1 + np.exp((LEVELS - C) / w))
        hit = rng.random((EXPERIMENTS, len(LEVELS), trials)) < p[None, :, None]
    hit[:, LEVELS == 0] = True
    experiment, level, trial = np.meshgrid(np.arange(EXPERIMENTS), LEVELS, np.arange(trials), indexing="ij")
    df = pd.DataFrame({"model": "sim", "layer": experiment.ravel(), "component": "h", "level": level.ravel(),
                       "trial": trial.ravel(), "hit": hit.ravel()})
    df.attrs["draws"] = draws
    return df


def coverage(fits: pd.DataFrame) -> float:
    """Share of all experiments whose interval holds C: one without an interval counts as a miss."""
    return float(((fits["ci_low"] <= C) & (C <= fits["ci_high"])).mean())


@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("draws,trials", [("fresh", 1), ("ray", MIN_RAY_TRIALS)],
                         ids=["fresh-default-trials", "ray-fewest-trials-with-ci"])
def test_the_95_percent_interval_covers_the_true_critical_level(draws, trials, w):
    fits = phase_transition(simulate(draws, w, trials, seed=round(w * 1000) + trials))
    assert coverage(fits) >= 0.90


def test_a_single_ray_gets_no_interval_but_says_why():
    fits = phase_transition(simulate("ray", 0.03, 1, seed=0))
    fitted = fits["status"].str.startswith("ci unreliable: 1 trial of rays")
    assert fitted.mean() > 0.95 and fits["ci_low"].isna().all()
