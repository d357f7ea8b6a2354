"""Patching tab: a clean/corrupt pair, a component per model, and the two models' layer × position
recovery heatmaps side by side (`compare.patch_sweep`), each beside a strip colouring every layer
by its kind (`figures.patching.recovery_by_kind`: a hybrid's attention and SSM layers); below, Mamba's hidden attention beside a
transformer's attention pattern (`compare.attention_map`).

The pair is one of the natural split's IOI rows (as `datasets_gen.build(seed=0)` writes them) with
one of its counterfactuals (`datasets_gen.counterfactuals`: the ABC corruption or the name swap),
or typed. Each model gets its own component, since the registries differ (Mamba's `h`, a
transformer's `resid_post` or one head `z.3`). The sweeps run in a worker thread (`jobs.run`)
with progress in runs (layer × position); Stop keeps the runs finished. Mode "estimate" runs
`compare.attribution_patch` instead (one forward and backward per model, whatever the prompt's
length) and shows its first-order estimate of the recovery in the same heatmap, said so on the
figure's title and in the note.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from compare import families
from compare.figures import base as figures, patching as patching_figures
from compare.analyses.attribution import attribution_patch
from compare.analyses.hidden_attention import attention_map
from compare.analyses.patching import patch_sweep, prepare
from compare.analyses.signatures import ATTRIBUTION_PATCH, PATCH_SWEEP
from datasets_gen.counterfactuals import corruptions
from datasets_gen.build import suite_rng
from datasets_gen.suites import NaturalConfig

from . import downloads, jobs, limits, models
from .tab_noise import LAYERS_HELP, default_component, family, parse_layers

SUITE_PROMPTS = 6
"""Prompts of the natural split (seed 0) offered as pairs, the classic sentence first."""
KIND_LABELS = {"abc": "ABC: a third name at the repeated subject", "name_swap": "name swap: the subject becomes the answer"}


def suite_pairs(n: int = SUITE_PROMPTS, seed: int = 0) -> dict[str, tuple[str, str, str, str]]:
    """Label → (clean, corrupt, answer, wrong) for the first `n` rows of the natural split that
    `datasets_gen.build(seed=seed)` writes, each with both corruptions: "natural i" is the split's
    row i, its abc corruption that row's `corrupt_abc`. Text only: the sweep checks the tokens of
    each model."""
    config = NaturalConfig()
    out = {}
    for i, (ioi, third) in enumerate(config.thirds(suite_rng(seed, config.name))[:n]):
        for kind, corrupt in corruptions(ioi, third).items():
            out[f"natural {i}, {KIND_LABELS[kind]}"] = (ioi.text(ioi.s), corrupt, " " + ioi.io, " " + ioi.s)
    return out


PAIRS = suite_pairs()
VIEW = "patching"
N_OUTPUTS = 4
MODES = ("exact", "estimate")
"""exact: one patched forward per (layer, position) (`patch_sweep`); estimate: `attribution_patch`."""
ESTIMATE_NOTE = ("**First-order estimate** (attribution patching): recovery ≈ ∂m/∂a · (a_clean − a_corrupt) "
                 "/ (m_clean − m_corrupt), the gradient taken on the corrupt run: one forward and backward per "
                 "model, for long prompts; not the exact effect (where the metric is far from linear in the "
                 "component the two differ; mode exact measures it).")
PATH_NOTE = (" With steps = {steps}, the gradient is averaged along the straight path from the corrupt to the "
             "clean input in {steps} segments (integrated gradients) instead: {steps} + 1 forwards and "
             "backwards per model.")
ESTIMATE_STOPPED = "**Stopped**: nothing to show (an estimate is computed whole)."


def components(model_name: str) -> list[str]:
    """The patchable points of the model's family (`Family.patchable`); one head, "z.<h>", may be typed."""
    return list(families.get(family(model_name)).patchable)


@limits.shown_to_user
def pick_model(model_name: str):
    return gr.Dropdown(choices=components(model_name), value=default_component(model_name))


def check_steps(value) -> int:
    """The steps box's value checked by `attribution_patch`'s signature (a whole number ≥ 1; the
    box sends a float such as 4.0, or None when cleared); InputError names `steps`."""
    if value is None:
        raise limits.InputError("steps is empty: type a whole number ≥ 1 (1: plain attribution patching)")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return ATTRIBUTION_PATCH["steps"].validate(value)
    except ValueError as err:  # the signature's message, which names steps
        raise limits.InputError(str(err)) from None


def pick_pair(label: str):
    """The clean and corrupt prompts, the answer and the wrong answer of a pair from `PAIRS`."""
    if label not in PAIRS:
        raise gr.Error(f"pair: pick one of {list(PAIRS)}")
    return PAIRS[label]


def files(df: pd.DataFrame, figure, stem: str) -> list[str]:
    directory = downloads.new_directory()
    return downloads.table_files(directory, df, stem) + [downloads.figure_file(directory, figure, "recovery")]


@limits.shown_to_user
def run(model_a, model_b, clean, corrupt, answer, wrong, component_a, component_b, layers, metric,
        mode: str = "exact", steps=ATTRIBUTION_PATCH["steps"].default, request: gr.Request = None,
        progress=gr.Progress()):
    """Stream (note, heatmaps, table, files): one patch sweep per model, side by side; with mode
    "estimate", `attribution_patch`'s estimate instead (one forward and backward per model; `steps`
    ≥ 2 integrates the gradient along the path from the corrupt to the clean input, at steps + 1
    times the cost)."""
    if mode not in MODES:
        raise limits.InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "estimate":
        steps = check_steps(steps)
    names = [n for n in (model_a, model_b) if n]
    if not names:
        raise limits.InputError("models: pick at least one model")
    handles = [models.load(n) for n in names]
    clean = limits.check_prompt(clean, handles, "clean prompt")
    corrupt = limits.check_prompt(corrupt, handles, "corrupt prompt")
    sweeps, runs, tokens, kinds = [], [], {}, []
    for handle, component in zip(handles, (component_a, component_b)):
        kw = dict(model=handle, answer=answer, wrong=wrong or None, component=component,
                  layers=parse_layers(layers, handle.n_layers), metric=metric)
        # every argument of every model checked before any compute
        prepared = prepare(clean, corrupt, **kw)
        runs.append(sum(len(s.layers) * len(s.patches) for s in prepared))
        tokens.update({s.handle.name: s.handle.decode_tokens(s.clean[0].tolist()) for s in prepared})
        kinds.append(models.kinds_note(handle, prepared[0].layers))
        sweeps.append(kw)
    if mode == "estimate":
        yield from estimated(clean, corrupt, sweeps, tokens, metric, kinds, request, progress, steps)
        return
    total = sum(runs)

    def work(progress, stop):
        frames, done = [], 0
        for kw, n in zip(sweeps, runs):
            offset = done
            frames.append(patch_sweep(clean, corrupt, **kw, stop=stop,
                                      progress=lambda d, t, offset=offset: progress(offset + d, total)))
            done += n
            if frames[-1].attrs["stopped"]:
                break
        return frames

    skip = jobs.skips(N_OUTPUTS)
    yield (f"Patching {total} runs (layers × positions) …",) + skip[1:]
    progress((0, total), desc="patching", unit="run")
    frames = yield from jobs.run(work, tick=skip, key=jobs.session_key(request, VIEW),
                                 on_progress=lambda done, t: progress((done, t), desc="patching", unit="run"))
    df = pd.concat(frames, ignore_index=True)
    for key in ("m_clean", "m_corrupt", "tokens", "answer", "wrong"):
        df.attrs[key] = {k: v for f in frames for k, v in f.attrs[key].items()}
    df.attrs["metric"] = metric
    stopped = any(f.attrs["stopped"] for f in frames)
    note = metric_note(df) + "\n\n" + "  \n".join(kinds)
    if stopped:
        note += f"\n\n**Stopped**: the heatmaps hold the {len(df)} of {total} runs finished."
    if df.empty:
        yield (note,) + skip[1:]
        return
    figure = patching_figures.recovery_by_kind(df)
    yield note, figure, df, files(df, figure, "patching_partial" if stopped else "patching")


def metric_note(df: pd.DataFrame) -> str:
    metric = df.attrs["metric"]
    return " · ".join(f"{name}: {metric} clean {df.attrs['m_clean'][name]:.3g}, corrupt "
                      f"{df.attrs['m_corrupt'][name]:.3g}" for name in df.attrs["m_clean"])


def estimated(clean, corrupt, sweeps, tokens, metric, kinds, request, progress, steps=1):
    """The "estimate" mode of `run`: `attribution_patch` of each model's component, one model
    after another (Stop is checked between them; an estimate is computed whole)."""
    def work(progress, stop):
        frames = []
        for i, kw in enumerate(sweeps):
            if stop.is_set():
                break
            args = {k: v for k, v in kw.items() if k != "component"}
            frames.append(attribution_patch(clean, corrupt, components=[kw["component"]], steps=steps, **args))
            progress(i + 1, len(sweeps))
        return frames

    skip = jobs.skips(N_OUTPUTS)
    yield ("Estimating (attribution patching: one forward and backward per model) …",) + skip[1:]
    progress((0, len(sweeps)), desc="estimating", unit="model")
    frames = yield from jobs.run(work, tick=skip, key=jobs.session_key(request, VIEW),
                                 on_progress=lambda done, t: progress((done, t), desc="estimating", unit="model"))
    if not frames:
        yield (ESTIMATE_STOPPED,) + skip[1:]
        return
    df = pd.concat(frames, ignore_index=True)
    for key in ("m_clean", "m_corrupt"):
        df.attrs[key] = {k: v for f in frames for k, v in f.attrs[key].items()}
    df.attrs.update(metric=metric, method="attribution", steps=steps,
                    tokens={m: tokens[m] for m in df.attrs["m_clean"]})
    path = PATH_NOTE.format(steps=steps) if steps > 1 else ""
    note = f"{ESTIMATE_NOTE}{path}\n\n{metric_note(df)}\n\n" + "  \n".join(kinds)
    if len(frames) < len(sweeps):
        note += f"\n\n**Stopped**: the heatmaps hold {', '.join(df.attrs['m_clean'])} only."
    figure = patching_figures.recovery_by_kind(df)
    figures.suptitle(figure, f"first-order estimate (attribution patching) of the recovery of {metric} when "
                             f"patching {', '.join(dict.fromkeys(df['component'].astype(str)))}"
                             + (f" (gradient along a path of {steps} steps)" if steps > 1 else ""))
    yield note, figure, df, files(df, figure, "attribution")


@limits.shown_to_user
def attention(model_a, model_b, prompt, layer_a, layer_b):
    """Both models' attention maps of one layer each: Mamba's hidden attention (mean over channels)
    or a transformer's pattern (mean over heads)."""
    picked = [(models.load(name), layer) for name, layer in ((model_a, layer_a), (model_b, layer_b)) if name]
    prompt = limits.check_prompt(prompt, [handle for handle, _ in picked])
    maps = [attention_map(prompt, model=handle, layer=limits.number(layer, "layer")) for handle, layer in picked]
    return patching_figures.attention_maps(maps)


def build(heavy: dict) -> None:
    with gr.Tab("Patching", id="patching"):
        gr.Markdown("Activation patching: run the corrupt prompt, put back one component at one layer and position "
                    "from the clean run, and read how much of the clean answer comes back "
                    "(recovery = (m_patched − m_corrupt) / (m_clean − m_corrupt); 1: all of it). On Mamba, "
                    "patching `h` at a position carries the clean state forward through the recurrence. "
                    "Stop keeps the runs already patched.")
        with gr.Row():
            model_a = gr.Dropdown(models.choices(), value="mamba", allow_custom_value=True, label="Model A",
                                  elem_id="patching-model-a")
            component_a = gr.Dropdown(components("mamba"), value="h", allow_custom_value=True,
                                      label="Component A", elem_id="patching-component-a")
            model_b = gr.Dropdown(models.choices(), value="gpt2", allow_custom_value=True, label="Model B",
                                  elem_id="patching-model-b")
            component_b = gr.Dropdown(components("gpt2"), value="resid_post", allow_custom_value=True,
                                      label="Component B", info="one head: z.<head>", elem_id="patching-component-b")
        pair = gr.Dropdown(list(PAIRS), value=list(PAIRS)[0], label="Pair", elem_id="patching-pair")
        with gr.Row():
            clean = gr.Textbox(PAIRS[list(PAIRS)[0]][0], label="Clean prompt", elem_id="patching-clean")
            corrupt = gr.Textbox(PAIRS[list(PAIRS)[0]][1], label="Corrupt prompt", elem_id="patching-corrupt")
        with gr.Row():
            answer = gr.Textbox(" Mary", label="Answer (one token)", elem_id="patching-answer")
            wrong = gr.Textbox(" John", label="Wrong answer (one token; empty: the best other)",
                               elem_id="patching-wrong")
            layers = gr.Textbox("all", label="Layers", info=LAYERS_HELP, elem_id="patching-layers")
            # patch_sweep's signature; attribution_patch (mode estimate) declares the same metrics
            metric = gr.Radio(list(PATCH_SWEEP["metric"].choices), value=PATCH_SWEEP["metric"].default,
                              label="Metric", elem_id="patching-metric")
            mode = gr.Radio(list(MODES), value="exact", label="Mode", elem_id="patching-mode",
                            info="exact: one forward per layer × position; estimate: attribution patching, a "
                                 "first-order estimate from one forward and backward (long prompts)")
            steps = gr.Number(ATTRIBUTION_PATCH["steps"].default, label="Steps (estimate)", precision=0,
                              minimum=1, elem_id="patching-steps",
                              info="1: the gradient at the corrupt run; k ≥ 2: along the path to the clean "
                                   "input in k segments (k + 1 times the cost)")
        with gr.Row():
            button = gr.Button("Patch", variant="primary", elem_id="patching-run")
            stop = gr.Button("Stop", variant="stop", elem_id="patching-stop")
        note = gr.Markdown(elem_id="patching-note")
        heatmaps = gr.Plot(show_label=False, elem_id="patching-heatmaps")
        table = gr.Dataframe(label="Recovery per layer and position", elem_id="patching-table",
                             headers=["no patching yet: run it"])
        results = gr.File(label="Download (CSV, Parquet, PNG)", file_count="multiple", elem_id="patching-files")
        gr.Markdown("**Attention, side by side**: Mamba's hidden attention α[t, s] (Ali et al. 2024; the "
                    "unrolled scan, mean over channels, signed) beside a transformer's attention pattern (mean "
                    "over heads), on the clean prompt.")
        with gr.Row():
            layer_a = gr.Number(0, label="Layer (model A)", precision=0, elem_id="patching-layer-a")
            layer_b = gr.Number(0, label="Layer (model B)", precision=0, elem_id="patching-layer-b")
            show = gr.Button("Show attention", elem_id="patching-attention")
        maps = gr.Plot(show_label=False, elem_id="patching-maps")
        pair.input(pick_pair, pair, [clean, corrupt, answer, wrong])
        model_a.input(pick_model, model_a, component_a)
        model_b.input(pick_model, model_b, component_b)
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, run),
                     inputs=[model_a, model_b, clean, corrupt, answer, wrong, component_a, component_b, layers,
                                  metric, mode, steps], outputs=[note, heatmaps, table, results], **heavy)
        stop.click(jobs.stop_handler(VIEW, "patching"), None, None, concurrency_limit=None)
        show.click(attention, [model_a, model_b, clean, layer_a, layer_b], maps, **heavy)
