"""Memory guards: work that would not fit is refused before it allocates; suites stream."""
from __future__ import annotations

import threading
import weakref

import pytest

import compare.analyses.comparison as comparison
from compare import Stopped, compare

PROMPT = "When Mary and John went to the store , John gave a drink to"


@pytest.fixture
def little_memory(monkeypatch):
    """The OS reports 64 MiB available."""
    monkeypatch.setattr("compare.base.memory.available_bytes", lambda: 64 * 2**20)


def _no_forward(monkeypatch, handle):
    monkeypatch.setattr(handle.module, "forward", lambda *a, **k: pytest.fail("ran a forward before refusing"))


def test_a_prompt_too_long_for_memory_is_refused_before_the_forward(tiny, little_memory, monkeypatch):
    mamba = tiny[0]["mamba"]
    _no_forward(monkeypatch, mamba)
    ids = [5] * 23_000  # 23,000 × 72 logits and the layer activations: > 32 MiB
    with pytest.raises(ValueError, match=r"a forward of 1 × 23,000 tokens through .* needs about \d+ MiB, "
                                         r"more than half of the 64 MiB"):
        mamba.logits(ids)


def test_compare_refuses_arrays_that_would_not_fit_with_the_estimate(tiny, little_memory, monkeypatch):
    mamba, gpt2 = tiny[0]["mamba"], tiny[0]["gpt2"]
    _no_forward(monkeypatch, mamba)
    with pytest.raises(ValueError, match=r"comparing a 20,000-token prompt over 1 models .* needs about"):
        compare([5] * 20_000, models=[mamba], progress=False)
    # a suite that fits batch by batch but not when every prompt keeps its arrays
    suite = [PROMPT] * 2000
    with pytest.raises(ValueError, match=r"comparing 2,000 prompts .* keep_arrays=False"):
        compare(suite, models=[mamba, gpt2], progress=False)


def test_a_suite_without_arrays_keeps_one_batch_alive(tiny, monkeypatch):
    """keep_arrays=False: when a batch's forward runs, no array of an earlier batch is alive."""
    models = [tiny[0]["mamba"], tiny[0]["gpt2"]]
    forward, batches, alive = comparison._forward, [], []

    def watched(handle, batch, **kwargs):
        alive.append(sum(ref() is not None for b in batches for ref in b))
        out = forward(handle, batch, **kwargs)
        batches.append([weakref.ref(L) for L in out])
        return out

    monkeypatch.setattr(comparison, "_forward", watched)
    results = compare([PROMPT] * 12, models=models, batch_size=4, keep_arrays=False, progress=False)
    assert len(results) == 12 and len(alive) == 6
    # the second model of a batch runs while the first's arrays of that batch live (4), never earlier ones
    assert alive == [0, 4, 0, 4, 0, 4]
    assert all(r.runs[m.name].logits is None for r in results for m in models)


def test_compare_stops_when_asked(tiny):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped, match="after 0 of 3 prompts"):
        compare([PROMPT] * 3, models=[tiny[0]["mamba"]], progress=False, stop=stop)
    with pytest.raises(ValueError, match="stop: must have an is_set"):
        compare(PROMPT, models=[tiny[0]["mamba"]], progress=False, stop="yes")


@pytest.mark.parametrize("name", ["mamba", "mamba2", "granite_hybrid"])
def test_restart_chunks_count_a_materialised_state_for_every_ssm_family(tiny, name):
    """A noised or patched state ([l, d_in, n] per layer) is budgeted as such on every SSM family,
    from the family's `Point.ssm` (the engine no longer reads Mamba-1's list of point names)."""
    from compare.engine.restart import chunk_size

    handle = tiny[0][name]
    T, budget = 16, 2**30
    assert handle.layer_bytes(T, ssm=True) > handle.layer_bytes(T)
    assert chunk_size(handle, "h", T, budget) == budget // handle.layer_bytes(T, ssm=True)
    assert chunk_size(handle, "resid_post", T, budget) == budget // handle.layer_bytes(T)
    assert chunk_size(handle, None, T, budget) == budget // handle.layer_bytes(T)
