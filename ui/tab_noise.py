"""Noise tab: a layers × levels × trials sweep on one component → phase curves, heatmap, fits.

Before sweeping, a plain forward shows the clean prediction and P(target): a sweep of a target
the clean model does not predict measures nothing, and the tab says so. The sweep is ONE
`compare.noise_sweep` call over all chosen layers, in a worker thread (`jobs.run`) that reports
each finished layer; Stop sets the sweep's stop, and the layers finished so far are fitted
(`compare.phase_transition`), plotted and offered as files, with a note of where it stopped.
The sweep's size is capped (`limits.check_sweep`) before any compute.
"""
from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd
import torch

from compare import families
from compare.figures import noise as noise_figures
from compare.analyses.noise import noise_sweep, prepare
from compare.analyses.signatures import NOISE_SWEEP
from compare.measures.phase import phase_transition

from . import downloads, jobs, limits, models, tab_channels

PROMPT = "When Mary and John went to the store, John gave a drink to"
"""By family: the component a sweep starts on (the thesis's h on Mamba, the residual stream on transformers)."""
LAYERS_HELP = ("'all', one layer '3', a range '2-5' (both ends included, low to high), "
               "or a list '0,2,7-9'")
MAX_PANELS = 6
"""Hit-curve panels drawn by default (spread over the sweep's layers); pick others below the plot."""
VIEW = "noise"
N_OUTPUTS = 8


def family(model_name: str) -> str:
    """The family of a picked model: a configured one ("mamba", "gpt2") is of its own family (no
    load), any other is loaded (`models.load`)."""
    return model_name if model_name in models.MODELS else models.load(model_name).family


def components(model_name: str) -> list[str]:
    """The per-layer hook points a sweep may noise on the model's family (its registry, `compare.families`)."""
    return list(families.get(family(model_name)).noisable)


def default_component(model_name: str) -> str:
    """The component the model's family names for sweeps and patching (`Family.default_component`)."""
    return families.get(family(model_name)).default_component


@limits.shown_to_user
def pick_model(model_name: str):
    """The component picker for another model: its family's components, on its default one."""
    return gr.Dropdown(choices=components(model_name), value=default_component(model_name))


def parse_layers(text: str | None, n_layers: int) -> list[int]:
    """"all", "3", "2-5", "0,2,7-9" → sorted layer indices, each checked against the model.

    A reversed range ("5-2") is refused rather than guessed: it is as likely a typo as a reversal.
    """
    text = (text or "").strip().lower()
    if text in ("", "all"):
        return list(range(n_layers))
    layers = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            lo, hi = int(lo), int(hi or lo)
        except ValueError:
            raise limits.InputError(f"layers: {text!r} is not like {LAYERS_HELP}") from None
        if hi < lo:
            raise limits.InputError(f"layers: the range {part.strip()!r} runs backwards; write it low to high, "
                                    f"'{hi}-{lo}'")
        layers.update(range(lo, hi + 1))
    bad = sorted(layer for layer in layers if not 0 <= layer < n_layers)
    if bad:
        raise limits.InputError(f"layers {bad} do not exist; this model has layers 0..{n_layers - 1}")
    return sorted(layers)


def default_plot_layers(layers: list[int]) -> list[int]:
    """Up to `MAX_PANELS` layers spread evenly over `layers` (first and last included)."""
    picks = np.unique(np.linspace(0, len(layers) - 1, min(MAX_PANELS, len(layers))).round().astype(int))
    return [layers[i] for i in picks]


def clean_reading(model, sweep) -> dict:
    """The clean run's last-position prediction, its P, and P(target): one plain forward."""
    with torch.no_grad():
        probs = torch.softmax(model.logits(sweep.ids)[0, -1], dim=-1)
    predicted = int(probs.argmax())
    return {"predicted_id": predicted, "predicted": model.decode_tokens([predicted])[0],
            "p_predicted": float(probs[predicted]), "target_id": sweep.target,
            "target": model.decode_tokens([sweep.target])[0],
            "p_target": float(probs[sweep.target])}


def clean_note(clean: dict) -> str:
    line = (f"Clean run: the last position predicts {clean['predicted']!r} (P = {clean['p_predicted']:.3g}); "
            f"P(target {clean['target']!r}) = {clean['p_target']:.3g}.")
    if clean["predicted_id"] != clean["target_id"]:
        line += (" **The clean prediction is not the target**, so every hit rate starts below 1: "
                 "the sweep measures how noise moves P(target), not when the prediction breaks.")
    return line


def stopped_note(df: pd.DataFrame, chosen: list[int]) -> str:
    done = list(df.attrs.get("layers_done", ()))
    if not done:
        return "**Stopped before the first layer finished**: nothing to plot or download."
    return (f"**Stopped after layer {done[-1]}** ({len(done)} of {len(chosen)} layers: "
            f"{', '.join(map(str, done))}). The plots, fits and files hold those layers only.")


def outputs(df: pd.DataFrame, fits: pd.DataFrame | None, plot_layers: list[int] | None = None):
    """Hit curves, heatmap, critical levels (None until fitted), the fits table."""
    curves = noise_figures.hit_curves(df, fits, layers=plot_layers)
    critical = noise_figures.critical_levels(fits) if fits is not None else None
    return curves, noise_figures.hit_heatmap(df), critical, fits


def files(df: pd.DataFrame, fits: pd.DataFrame, figures, stem: str = "noise_sweep") -> list[str]:
    directory = downloads.new_directory()
    paths = (downloads.table_files(directory, df, stem)
             + downloads.table_files(directory, fits, "critical_levels"))
    return paths + [downloads.figure_file(directory, f, stem) for f, stem in
                    zip(figures, ("hit_curves", "hit_heatmap", "critical_levels"))]


@limits.shown_to_user
def run(model_name, prompt, target, component, layers, low, high, n_levels, trials, distribution, scale,
        seed, draws="fresh", request: gr.Request = None, progress=gr.Progress()):
    """Stream (note, curves, heatmap, critical levels, fits, files, plot-layer picker, result state).

    model_name: a configured model ("mamba", "gpt2") or any source (`models.load`).
    """
    model = models.load(model_name)
    prompt, target = limits.check_prompt(prompt, [model]), limits.token(target)
    chosen = parse_layers(layers, model.n_layers)
    low, high = limits.number(low, "level from", float), limits.number(high, "level to", float)
    n_levels, trials = limits.number(n_levels, "levels"), limits.number(trials, "trials")
    seed = limits.number(seed, "seed")
    limits.check_levels(low, high)
    limits.check_sweep(len(chosen), n_levels, trials)
    levels = np.linspace(low, high, n_levels)
    sweep = dict(model=model, target=target, component=component, layers=chosen, levels=levels, trials=trials,
                 distribution=distribution, scale=scale, seed=seed, draws=draws)
    prepared = prepare(prompt, **sweep)  # validates target and component
    clean = clean_reading(model, prepared)
    note = clean_note(clean) + "\n\n" + models.kinds_note(model, prepared.layers)
    if clean["predicted_id"] != clean["target_id"]:
        gr.Warning(f"The clean prediction is {clean['predicted']!r}, not the target {clean['target']!r}.",
                   title="Target not predicted")
    skip = jobs.skips(N_OUTPUTS)
    yield (note + f"\n\nSweeping {len(chosen)} layers …",) + skip[1:]
    progress((0, len(chosen)), desc="noise sweep", unit="layer")
    df = yield from jobs.run(lambda progress, stop: noise_sweep(prompt, **sweep, progress=progress, stop=stop),
                             tick=skip, key=jobs.session_key(request, VIEW),
                             on_progress=lambda done, total: progress((done, total), desc="noise sweep",
                                                                      unit="layer"))
    stopped = bool(df.attrs.get("stopped"))
    if stopped:
        note += "\n\n" + stopped_note(df, chosen)
    if df.empty:
        yield (note,) + skip[1:]
        return
    fits = phase_transition(df, seed=seed)
    done = sorted(df["layer"].unique().tolist())
    plot_layers = default_plot_layers(done)
    figures = outputs(df, fits, plot_layers)
    picker = gr.CheckboxGroup(choices=models.layer_choices(model, done), value=plot_layers, interactive=True)
    yield (note, *figures, files(df, fits, figures[:3], "noise_sweep_partial" if stopped else "noise_sweep"),
           picker, (df, fits))


@limits.shown_to_user
def redraw(result, plot_layers):
    """The hit curves of the layers picked, from the session's latest sweep."""
    if result is None:
        raise limits.InputError("no sweep yet: run one first")
    if not plot_layers:
        raise limits.InputError("layers to plot: pick at least one")
    df, fits = result
    return noise_figures.hit_curves(df, fits, layers=sorted(plot_layers))


def build(heavy: dict) -> None:
    with gr.Tab("Noise", id="noise"):
        gr.Markdown("Add noise to one component of one layer and watch whether the prediction survives "
                    "(hit = the last position's argmax is the target). On Mamba's `h` the noise enters "
                    "the recurrence and reaches later positions; `h_readout` changes only the read-out. "
                    f"Sweeps are capped at {limits.LIMITS.sweep_forwards} noisy runs (layers × levels × trials). "
                    "Stop keeps the layers already swept.")
        with gr.Row():
            model_name = gr.Dropdown(models.choices(), value="mamba", allow_custom_value=True, label="Model",
                                     elem_id="noise-model", info="an alias, a Hub id or a local directory too")
            component = gr.Dropdown(components("mamba"), value=default_component("mamba"), label="Component",
                                    elem_id="noise-component")
            layers = gr.Textbox("all", label="Layers", info=LAYERS_HELP, elem_id="noise-layers")
        with gr.Row():
            prompt = gr.Textbox(PROMPT, label="Prompt", scale=3, elem_id="noise-prompt")
            target = gr.Textbox(" Mary", label="Target", info=limits.TARGET_HELP, elem_id="noise-target")
        with gr.Row():
            low = gr.Number(0.0, label="Level from", elem_id="noise-low")
            high = gr.Number(1.0, label="Level to", elem_id="noise-high")
            n_levels = gr.Number(20, label="Levels", precision=0, elem_id="noise-levels")
            trials = gr.Number(NOISE_SWEEP["trials"].default, label="Trials", precision=0, elem_id="noise-trials")
            # the choices and defaults of noise_sweep's signature; the app noises relative to the clean value
            distribution = gr.Radio(list(NOISE_SWEEP["distribution"].choices), value=NOISE_SWEEP["distribution"].default,
                                    label="Distribution")
            scale = gr.Radio(list(NOISE_SWEEP["scale"].choices), value="relative", label="Scale")
            seed = gr.Number(NOISE_SWEEP["seed"].default, label="Seed", precision=0)
            draws = gr.Radio(list(NOISE_SWEEP["draws"].choices), value=NOISE_SWEEP["draws"].default, label="Draws",
                             elem_id="noise-draws",
                             info="fresh: new noise per level and trial; ray: one ε per trial, scaled by the level")
        with gr.Row():
            button = gr.Button("Run sweep", variant="primary", elem_id="noise-run")
            stop = gr.Button("Stop", variant="stop", elem_id="noise-stop")
        note = gr.Markdown(elem_id="noise-note")
        # The figures carry their own titles: a label above them would hide the title.
        curves = gr.Plot(show_label=False, elem_id="noise-curves")
        plot_layers = gr.CheckboxGroup([], label="Layers to plot (hit curves)", elem_id="noise-plot-layers")
        with gr.Row():
            heatmap = gr.Plot(show_label=False, elem_id="noise-heatmap")
            critical = gr.Plot(show_label=False, elem_id="noise-critical")
        fits = gr.Dataframe(label="Critical levels (logistic fit, bootstrap CI)", elem_id="noise-fits",
                            headers=["no sweep yet: click Run sweep"])
        results = gr.File(label="Download (CSV, Parquet, PNG)", file_count="multiple", elem_id="noise-files")
        result = gr.State(None)
        model_name.input(pick_model, model_name, component)
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, run),
                     inputs=[model_name, prompt, target, component, layers, low, high, n_levels, trials,
                                  distribution, scale, seed, draws],
                     outputs=[note, curves, heatmap, critical, fits, results, plot_layers, result], **heavy)
        # Stop does not cancel the event: the sweep returns the layers it finished, and they are shown.
        stop.click(jobs.stop_handler(VIEW, "sweep"), None, None, concurrency_limit=None)
        plot_layers.input(redraw, [result, plot_layers], curves)
        tab_channels.build(model_name, prompt, target, component, heavy)
