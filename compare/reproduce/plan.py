"""The thesis's inputs, and the sizes of the report's sweeps (full and `--quick`).

The inputs are the thesis's own (eq. 1/8, eq. 9, Figs. 9 and 18–21); where it leaves something
unstated, the value chosen here is listed in the report's choices (`errata.choices`) with why.
"""
from __future__ import annotations

from dataclasses import dataclass

IOI = "When Mary and John went to the store, John gave a drink to"
MARY = " Mary"
IOI_NEOX_IDS = (3039, 6393, 285, 2516, 2427, 281, 253, 4657, 13, 2516, 3534, 247, 5484, 281)  # eq. 8
REPEATED = "123"
REPEATED_ID_NEOX = 10683  # eq. 9: "123" in GPT-NeoX
REPEATED_COUNT = 14  # eq. 9 lists 14 × 10683 (Table 1 reads T up to 13)
PRINTED_REPEATS = 16  # eq. 9 prints "123" 16 times (48 characters)
# Fig. 9's translation; the thesis's extraction writes "éjo" (an OCR slip for "ėjo")
LITHUANIAN = "Kai Marija ir Jonas ėjo į parduotuvę, Jonas davė atsigerti"
FIG9_COUNTS = {"english": 14, "lithuanian": 26}
CYCLES = ((42, 69), (4200, 6660))  # Figs. 18–21, GPT-NeoX IDs
TABLE1_POSITIONS = (2, 8, 10, 13)  # Table 1: P(" Mary") high at these T
THESIS_R = 0.77  # Result 1
THESIS_CRITICAL = 0.45  # Fig. 22
FLATTENED_LAYERS = (2, 22)  # Fig. 24, of Mamba-130m's 24 layers
THESIS_LAYERS = 24


@dataclass(frozen=True)
class Plan:
    """Sizes of one report. `FULL` is what `thesis_report()` runs, `QUICK` what `quick=True` runs."""

    name: str
    periodic_length: int  # tokens of each periodic prompt
    noise_levels: int  # levels evenly in [0, noise_max]
    noise_trials: int
    noise_layers: int | None  # layers swept, evenly spread (None: all)
    n_boot: int  # bootstrap resamples of each critical level
    component_levels: int  # levels of §7.2's sweep of every component (fewer than the main sweep's)
    component_layers: int  # layers of §7.2's sweep, evenly spread
    flattened_level: float  # absolute noise level of Figs. 24–25's noisy runs
    flattened_draws: int  # noise draws of each flattened run (their spread is reported)
    channel_trials: int
    channel_level: float  # relative scale
    channel_layer: int  # of Mamba-130m's 24, at the same relative depth in other models (`scaled_layer`)
    hit_curve_panels: int  # layers shown as hit curves
    noise_max: float = 1.0  # top of the swept levels (the thesis's range is [0, 1])


# The thesis's sizes where it states them: §7.1 repeats "noise a layer, record the hit, change the level" a
# hundred times per layer, so 100 levels in [0, 1] with one fresh draw each. §7.4 states none: 4 trials per
# channel (a continuous effect on P(" Mary") ranks them, so ties are rare), 5 draws of each flattened run
# for a spread. The channel ranking reruns every channel of Mamba-130m's h (1,552 runs per trial) from its
# layer on, so it runs at a late layer: from layer 2 it alone took longer than the rest of the report.
FULL = Plan("full", periodic_length=64, noise_levels=100, noise_trials=1, noise_layers=None, n_boot=200,
            component_levels=21, component_layers=3,
            flattened_level=1.0, flattened_draws=5, channel_trials=4, channel_level=1.0, channel_layer=22,
            hit_curve_panels=6)
QUICK = Plan("quick", periodic_length=16, noise_levels=5, noise_trials=2, noise_layers=2, n_boot=50,
             component_levels=5, component_layers=1,
             flattened_level=1.0, flattened_draws=3, channel_trials=2, channel_level=1.0, channel_layer=22,
             hit_curve_panels=2)
THESIS_NOISE_RUNS_PER_LAYER = 100  # §7.1, step 4


def component(handle) -> str:
    """The component the report noises in `handle`, as its family declares (`Family.default_component`:
    h(t) on Mamba as in the thesis, the residual stream on transformers)."""
    return handle.arch.default_component


def scaled_layer(layer: int, n_layers: int) -> int:
    """The layer at the same relative depth as `layer` of Mamba-130m's 24 (layer 22 of 24 → 11 of 12)."""
    return min(n_layers - 1, max(0, round(layer * (n_layers - 1) / (THESIS_LAYERS - 1))))


def spread(n_layers: int, k: int | None) -> list[int]:
    """`k` layers evenly over 0..n_layers − 1, first and last included (all when k is None)."""
    if k is None or k >= n_layers:
        return list(range(n_layers))
    if k == 1:
        return [0]
    return sorted({round(i * (n_layers - 1) / (k - 1)) for i in range(k)})
