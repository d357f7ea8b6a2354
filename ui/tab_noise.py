"""Noise tab: a layers × levels × trials sweep on one component → phase curves, heatmap, fits.

The sweep runs one layer at a time through `compare.noise_sweep` (batched inside a layer) so the
plots fill in as layers finish and Stop takes effect between layers; `compare.phase_transition`
fits the critical level. The sweep's size is capped (`limits.check_sweep`) before any compute.
"""
from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from compare import noise_figures, points
from compare.noise import DISTRIBUTIONS, SCALES, noise_sweep
from compare.phase import phase_transition

from . import downloads, limits, models, tab_channels

PROMPT = "When Mary and John went to the store, John gave a drink to"
DEFAULT_COMPONENT = {"mamba": "h", "gpt2": "resid_post"}


def components(role: str) -> list[str]:
    """The per-layer hook points of a model family (GPT-2's `pattern` cannot be noised)."""
    return [c for c in points.LAYER_POINTS[role] if c != "pattern"]


def parse_layers(text: str | None, n_layers: int) -> list[int]:
    """"all", "3", "0-5", "0,2,7-9" → sorted layer indices, each checked against the model."""
    text = (text or "").strip().lower()
    if text in ("", "all"):
        return list(range(n_layers))
    layers = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise limits.InputError(f"layers: {text!r} is not like 'all', '3', '0-5' or '0,2,7-9'") from None
    bad = sorted(layer for layer in layers if not 0 <= layer < n_layers)
    if bad:
        raise limits.InputError(f"layers {bad} do not exist; this model has layers 0..{n_layers - 1}")
    return sorted(layers)


def outputs(df: pd.DataFrame, fits: pd.DataFrame | None):
    """Hit curves, heatmap, critical levels (None until fitted), the fits table."""
    curves = noise_figures.hit_curves(df, fits)
    critical = noise_figures.critical_levels(fits) if fits is not None else None
    return curves, noise_figures.hit_heatmap(df), critical, fits


def files(df: pd.DataFrame, fits: pd.DataFrame, figures) -> list[str]:
    directory = downloads.new_directory()
    paths = (downloads.table_files(directory, df, "noise_sweep")
             + downloads.table_files(directory, fits, "critical_levels"))
    return paths + [downloads.figure_file(directory, f, stem) for f, stem in
                    zip(figures, ("hit_curves", "hit_heatmap", "critical_levels"))]


@limits.shown_to_user
def run(role, prompt, target, component, layers, low, high, n_levels, trials, distribution, scale,
        seed, progress=gr.Progress()):
    """Stream (curves, heatmap, critical levels, fits table, files) as each layer finishes."""
    prompt = limits.check_prompt(prompt)
    model = models.get(role)
    chosen = parse_layers(layers, model.n_layers)
    low, high = limits.number(low, "level from", float), limits.number(high, "level to", float)
    n_levels, trials = limits.number(n_levels, "levels"), limits.number(trials, "trials")
    seed = limits.number(seed, "seed")
    limits.check_levels(low, high)
    limits.check_sweep(len(chosen), n_levels, trials)
    levels = np.linspace(low, high, n_levels)
    frames = []
    for layer in progress.tqdm(chosen, desc="noise sweep", unit="layer"):
        frames.append(noise_sweep(prompt, model=model, target=target, component=component, layers=[layer],
                                  levels=levels, trials=trials, distribution=distribution, scale=scale,
                                  seed=seed))
        yield *outputs(pd.concat(frames, ignore_index=True), None), None
    df = pd.concat(frames, ignore_index=True)
    fits = phase_transition(df, seed=seed)
    figures = outputs(df, fits)
    yield *figures, files(df, fits, figures[:3])


def build() -> None:
    with gr.Tab("Noise", id="noise"):
        gr.Markdown("Add noise to one component of one layer and watch whether the prediction survives "
                    "(hit = the last position's argmax is the target). On Mamba's `h` the noise enters "
                    "the recurrence and reaches later positions; `h_readout` changes only the read-out. "
                    f"Sweeps are capped at {limits.LIMITS.sweep_forwards} noisy runs (layers × levels × trials).")
        with gr.Row():
            role = gr.Radio(list(models.MODELS), value="mamba", label="Model", elem_id="noise-model")
            component = gr.Dropdown(components("mamba"), value=DEFAULT_COMPONENT["mamba"], label="Component",
                                    elem_id="noise-component")
            layers = gr.Textbox("all", label="Layers ('all', '0-5', '0,2,7')", elem_id="noise-layers")
        with gr.Row():
            prompt = gr.Textbox(PROMPT, label="Prompt", scale=3, elem_id="noise-prompt")
            target = gr.Textbox(" Mary", label="Target (one token)", elem_id="noise-target")
        with gr.Row():
            low = gr.Number(0.0, label="Level from", elem_id="noise-low")
            high = gr.Number(1.0, label="Level to", elem_id="noise-high")
            n_levels = gr.Number(20, label="Levels", precision=0, elem_id="noise-levels")
            trials = gr.Number(1, label="Trials", precision=0, elem_id="noise-trials")
            distribution = gr.Radio(list(DISTRIBUTIONS), value="gaussian", label="Distribution")
            scale = gr.Radio(list(SCALES), value="relative", label="Scale")
            seed = gr.Number(0, label="Seed", precision=0)
        with gr.Row():
            button = gr.Button("Run sweep", variant="primary", elem_id="noise-run")
            stop = gr.Button("Stop", variant="stop", elem_id="noise-stop")
        with gr.Row():
            curves = gr.Plot(label="Hit and P(target) vs level", elem_id="noise-curves")
            heatmap = gr.Plot(label="Hit rate, layer × level", elem_id="noise-heatmap")
        critical = gr.Plot(label="Critical level vs layer", elem_id="noise-critical")
        fits = gr.Dataframe(label="Critical levels (logistic fit, bootstrap CI)", elem_id="noise-fits")
        results = gr.File(label="Download (CSV, Parquet, PNG)", file_count="multiple", elem_id="noise-files")
        role.change(lambda r: gr.Dropdown(choices=components(r), value=DEFAULT_COMPONENT[r]), role, component)
        event = button.click(run, inputs=[role, prompt, target, component, layers, low, high, n_levels, trials,
                                          distribution, scale, seed],
                             outputs=[curves, heatmap, critical, fits, results])
        stop.click(None, cancels=[event])
        tab_channels.build(role, prompt, target, component)
