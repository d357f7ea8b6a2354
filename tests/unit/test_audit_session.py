"""Hostile input and concurrency on the hybrids' restart from y, the logit lens and the tuned lens
(audit of 2026-12-06): each test is a case that was wrong, or a guarantee the audit checked and
keeps, against an independent reference (one trace per run, transformers' own logits)."""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

from compare import noise_sweep, patch_sweep
from compare.analyses.noise_ref import noise_sweep_ref
from test_hybrids import CORRUPT, PROMPT


def _quiet_sweep(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OverflowRunsWarning: the overflow is what is tested
        return noise_sweep(PROMPT, **kw), noise_sweep_ref(PROMPT, **kw)


@pytest.mark.parametrize("family,component", [("granite_hybrid", "h"), ("granite_hybrid", "B"),
                                              ("falcon_h1", "h"), ("nemotron_h", "B"), ("mamba2", "B")])
def test_noise_from_y_that_overflows_the_forward_is_flagged_as_the_forward_flags_it(tiny, family, component):
    """At level 1e38 the noised state h + 1e38·ε of the forward is infinite, while the change of y
    the restart from y scales stays finite and the gated norm made it a finite prediction: such
    runs are rerun by the noised forward, so the rows flag overflow exactly where one trace per run
    does (was: every run finite on the hybrids, some on Mamba-2's B)."""
    kw = dict(model=tiny[0][family], target=" Mary", component=component, levels=[1e30, 1e38], trials=2, seed=1)
    fast, ref = _quiet_sweep(**kw)
    assert not ref["finite"].all()  # the case overflows the forward
    assert fast["finite"].tolist() == ref["finite"].tolist()
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=1e-5)  # NaN where not finite, in both


def _mixer_hooks(handle):
    """Forward hooks left on the Mamba-2 mixers (an attention layer has none)."""
    mixers = [getattr(block, handle.arch.mixer_name, None) for block in handle.arch.blocks(handle.module)]
    return sum(len(mixer._forward_hooks) for mixer in mixers if mixer is not None)


def test_sweeps_from_y_in_two_threads_beside_a_plain_forward_equal_their_solo_runs(tiny):
    """block_from_y's temporary hook on the shared mixer never reaches another caller: a noise sweep
    and a patch sweep of h on Granite in two threads and plain forwards in a third equal their solo
    runs bit for bit, and no hook is left."""
    handle = tiny[0]["granite_hybrid"]
    ids = torch.tensor([handle.encode(PROMPT)])
    noise = lambda: noise_sweep(PROMPT, model=handle, target=" Mary", component="h", levels=[0.0, 0.8, 3.0],
                                trials=3, seed=3)
    patch = lambda: patch_sweep(PROMPT, CORRUPT, model=handle, component="h", answer=" Mary", wrong=" John",
                                positions=[3, 9, (2, 9), "all"])

    def forwards():
        with torch.no_grad():
            return [handle.logits(ids) for _ in range(20)]

    solo = {"noise": noise(), "patch": patch(), "logits": forwards()[0]}
    out = {}
    threads = [threading.Thread(target=lambda name=name, f=f: out.update({name: f()}))
               for name, f in (("noise", noise), ("patch", patch), ("logits", forwards))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert out["noise"].equals(solo["noise"]) and out["patch"].equals(solo["patch"])
    assert all(torch.equal(logits, solo["logits"]) for logits in out["logits"])
    assert _mixer_hooks(handle) == 0


class _Raised(Exception):
    pass


def _raise(*_):
    raise _Raised


@pytest.mark.parametrize("family", ["granite_hybrid", "falcon_h1", "nemotron_h"])
@pytest.mark.parametrize("component", ["h", "B"])
def test_a_progress_callback_that_raises_inside_a_sweep_from_y_leaves_no_hook(tiny, family, component):
    handle = tiny[0][family]
    with pytest.raises(_Raised):
        noise_sweep(PROMPT, model=handle, target=" Mary", component=component, levels=[0.0, 1.0], progress=_raise)
    with pytest.raises(_Raised):
        patch_sweep(PROMPT, CORRUPT, model=handle, component=component, answer=" Mary", wrong=" John",
                    positions=[3, (2, 9)], progress=_raise)
    assert _mixer_hooks(handle) == 0


def _lens_texts(count: int) -> list[str]:
    from test_tuned_lens import texts
    return texts(0, count)


@pytest.mark.parametrize("lr", [1e39, 1e300])
def test_a_learning_rate_beyond_float32_is_refused_naming_it(tiny, lr):
    """Was a RuntimeError from inside torch's SGD (the step's scale does not fit float32)."""
    from compare.analyses.tuned_lens import train_tuned_lens

    with pytest.raises(ValueError, match=r"lr must be a finite number > 0 and at most 3.4e\+38"):
        train_tuned_lens(tiny[0]["gpt2"], _lens_texts(4), steps=2, seed=0, seq_len=16, lr=lr)


def test_translators_that_diverge_without_held_out_windows_are_reset_to_the_logit_lens(tiny, tmp_path):
    """lr = 1e30 on a corpus of 6 windows (none held out): the translators overflow to NaN; they
    were kept, so the lens decoded NaN and `load` refused what `save` wrote. Now they are reset to
    the identity with a warning, and the lens decodes as the logit lens does."""
    from compare import logit_lens
    from compare.analyses.tuned_lens import load, save, train_tuned_lens

    handle = tiny[0]["gpt2"]
    with pytest.warns(RuntimeWarning, match=r"translators of layers \[0\] became NaN or infinite"):
        lens = train_tuned_lens(handle, _lens_texts(4), steps=3, seed=0, seq_len=16, lr=1e30)
    assert lens.meta["held_out"]["windows"] == [] and lens.meta["diverged_layers"] == [0]
    reloaded = load(save(lens, tmp_path / "lens"), model=handle)
    tuned, logit = logit_lens(PROMPT, model=handle, lens=reloaded), logit_lens(PROMPT, model=handle)
    assert tuned[["target_prob", "kl", "entropy"]].equals(logit[["target_prob", "kl", "entropy"]])


@pytest.mark.parametrize("text", ["\x00", "🐍", "a\x00b", "Paris"])
def test_a_target_the_tokenizer_reads_as_its_unknown_token_is_refused(tiny, text):
    """The tiny word-level tokenizer reads any word outside its vocabulary as <unk>, one token:
    such a target was taken, and the lens reported P(<unk>) as the target's."""
    from compare import logit_lens

    handle = tiny[0]["mamba"]
    assert handle.tokenizer.encode(text, add_special_tokens=False) == [handle.tokenizer.unk_token_id]
    with pytest.raises(ValueError, match=r"target: .* is not in mamba's vocabulary: its tokenizer reads it as the "
                                         r"unknown token '<unk>' \(ID 1\)"):
        logit_lens(PROMPT, model=handle, target=text)
    with pytest.raises(ValueError, match=r"answer: .* is not in mamba's vocabulary"):
        patch_sweep(PROMPT, CORRUPT, model=handle, answer=text, wrong=" John")


def test_the_unknown_token_itself_and_a_token_of_the_vocabulary_are_taken(tiny):
    handle = tiny[0]["mamba"]
    assert handle.single_token("<unk>", what="target") == handle.tokenizer.unk_token_id
    assert handle.single_token(" Mary", what="target") == handle.tokenizer.encode(" Mary", add_special_tokens=False)[0]
