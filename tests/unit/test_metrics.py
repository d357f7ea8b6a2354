"""Metrics against hand-computed values and plain numpy/scipy."""
import math

import numpy as np
import pytest
from scipy import stats

from compare.measures import metrics
from compare import tokenizer_stats
from conftest import shared_tokenizer, tiny_tokenizer


def test_normalise_divides_each_row_by_the_absolute_value_of_its_mean():
    L = np.array([[1.0, 2.0, 3.0], [-1.0, -3.0, -2.0]])
    np.testing.assert_allclose(metrics.normalise(L), [[0.5, 1.0, 1.5], [-0.5, -1.5, -1.0]])


def test_softmax_matches_the_textbook_formula():
    L = np.random.default_rng(0).normal(size=(4, 7))
    expected = np.exp(L) / np.exp(L).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(metrics.softmax(L), expected, rtol=1e-12)


def test_softmax_survives_large_logits():
    assert np.allclose(metrics.softmax(np.array([[1000.0, 1000.0]])), 0.5)


def test_argmax_breaks_ties_towards_the_lowest_id():
    assert metrics.argmax(np.array([[0.0, 2.0, 2.0], [5.0, 1.0, 5.0]])).tolist() == [1, 0]


def test_top_k_lists_the_most_probable_first():
    ids, probs = metrics.top_k(np.array([[0.1, 0.6, 0.3]]), 2)
    assert ids.tolist() == [[1, 2]] and np.allclose(probs, [[0.6, 0.3]])


def test_js_divergence_of_a_point_mass_and_a_fair_coin():
    # m = (0.75, 0.25); KL(p‖m) = log2(4/3); KL(q‖m) = ½ log2(2/3) + ½ log2(2)
    expected = (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5) / 2
    assert metrics.js_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(expected)


def test_js_divergence_is_zero_for_equal_and_one_for_disjoint_rows():
    p = np.array([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.2, 0.8, 0.0], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(metrics.js_divergence(p, q), [0.0, 1.0], atol=1e-12)


def test_js_divergence_renormalises_restricted_rows():
    assert metrics.js_divergence(np.array([0.2, 0.2]), np.array([0.5, 0.5])) == pytest.approx(0.0)


def test_shared_vocabulary_matches_strings_held_once_by_each_side():
    ids_a, ids_b = metrics.shared_vocabulary(["a", "b", "c", "c", "d"], ["c", "d", "b", "x"])
    assert ids_a.tolist() == [1, 4] and ids_b.tolist() == [2, 1]  # "c" is ambiguous in the first


@pytest.mark.parametrize("ids, expected", [([1, 2, 1, 2, 1], 2), ([5, 5, 5], 1), ([1, 2, 3], None),
                                           ([1, 2, 1], None), ([7], None)])
def test_period_needs_the_pattern_twice(ids, expected):
    assert metrics.period(ids) == expected


def test_continuation_wraps_around_the_period():
    assert metrics.continuation([1, 2, 3, 1, 2], 3).tolist() == [2, 3, 1, 2, 3]


@pytest.mark.parametrize("pred, expected, lock", [([0, 1, 2, 2], [9, 9, 2, 2], 2), ([2, 2], [2, 2], 0),
                                                  ([2, 3], [2, 2], None), ([1, 9, 1], [1, 1, 1], 2)])
def test_lock_in_is_the_first_position_after_the_last_mistake(pred, expected, lock):
    assert metrics.lock_in(pred, expected) == lock


def test_k_stats_are_population_variance_and_biased_skew():
    K = np.random.default_rng(1).gamma(2.0, size=(3, 50))
    table = metrics.k_stats(K)
    np.testing.assert_allclose(table["mean"], K.mean(axis=1))
    np.testing.assert_allclose(table["variance"], K.var(axis=1))
    np.testing.assert_allclose(table["skew"], stats.skew(K, axis=1, bias=True))


def _bulk_with_bump(bump_size):
    bulk = stats.norm.ppf(np.linspace(0.001, 0.999, 1000))
    return np.concatenate([bulk, 40.0 + np.arange(bump_size)])


def test_tail_outliers_are_the_bump_highest_first():
    row = _bulk_with_bump(20)
    assert metrics.tail_outliers(row).tolist() == list(range(1019, 999, -1))
    assert metrics.tail_bump(row)


def test_a_gaussian_row_has_no_tail_bump():
    assert not metrics.tail_bump(_bulk_with_bump(0))


def test_tail_outliers_fall_back_to_std_when_most_values_tie():
    row = np.array([0.0] * 90 + [1.0] * 9 + [100.0])
    assert metrics.tail_outliers(row).tolist() == [99]


def test_variance_trend_of_a_straight_line():
    trend = metrics.variance_trend([1.0, 3.0, 5.0, 7.0])
    assert trend == pytest.approx({"slope": 2.0, "intercept": 1.0, "r": 1.0})


def test_tokenizer_stats_over_a_hand_built_vocabulary():
    tok = tiny_tokenizer()
    by_id = sorted((i, w) for w, i in tok.get_vocab().items())
    ids = np.array([i for i, _ in by_id], dtype=float)
    lengths = np.array([len(w) for _, w in by_id], dtype=float)
    result = tokenizer_stats(tok)
    assert result["r_id_len"] == pytest.approx(np.corrcoef(ids, lengths)[0, 1])
    assert result["r_logid_len"] == pytest.approx(np.corrcoef(np.log1p(ids), lengths)[0, 1])
    assert result["n_tokens"] == result["n_vocab"] == 64


def test_tokenizer_stats_over_a_text_counts_every_occurrence():
    tok = tiny_tokenizer()
    words = "When Mary and John went to the store , John gave a drink to".split()
    vocab = tok.get_vocab()
    ids = np.array([vocab[w] for w in words], dtype=float)
    lengths = np.array([len(w) for w in words], dtype=float)
    result = tokenizer_stats(tok, " ".join(words))
    assert result["n_tokens"] == len(words)
    assert result["r_id_len"] == pytest.approx(np.corrcoef(ids, lengths)[0, 1])


def test_tokenizer_stats_rejects_an_empty_text():
    with pytest.raises(ValueError, match="text"):
        tokenizer_stats(tiny_tokenizer(), "")


def _gpt2_byte_lengths():
    """Decoded lengths of the real GPT-2 vocabulary straight from vocab.json's byte alphabet."""
    import json

    from conftest import SHARED_TOKENIZERS

    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):  # GPT-2's bytes_to_unicode: unprintable bytes map to chr(256 + n)
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    vocab = json.loads((SHARED_TOKENIZERS / "gpt2" / "vocab.json").read_text())
    by_id = sorted((i, bytes(chars[c] for c in w)) for w, i in vocab.items())
    return np.array([i for i, _ in by_id], float), np.array([len(b.decode("utf-8", "replace")) for _, b in by_id], float)


@pytest.mark.slow
def test_tokenizer_stats_on_the_real_gpt2_vocabulary():
    shared_tokenizer("gpt2")  # skips when the shared tokenizers are absent
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from conftest import SHARED_TOKENIZERS

    tok = PreTrainedTokenizerFast(tokenizer_object=ByteLevelBPETokenizer(
        str(SHARED_TOKENIZERS / "gpt2" / "vocab.json"), str(SHARED_TOKENIZERS / "gpt2" / "merges.txt")))
    ids, lengths = _gpt2_byte_lengths()
    result = tokenizer_stats(tok)
    assert result["n_vocab"] == 50257
    assert result["r_id_len"] == pytest.approx(np.corrcoef(ids, lengths)[0, 1], abs=1e-3)
    assert result["r_logid_len"] == pytest.approx(np.corrcoef(np.log1p(ids), lengths)[0, 1], abs=1e-3)


def test_normalise_with_padding_divides_by_the_mean_over_every_column():
    L = np.array([[1.0, 2.0, 3.0], [-4.0, 0.0, 1.0]])
    padding = np.array([[-10.0], [2.0]])
    # row means over 4 columns: (1 + 2 + 3 − 10) / 4 = −1, (−4 + 0 + 1 + 2) / 4 = −0.25
    np.testing.assert_allclose(metrics.normalise(L, padding), [[1.0, 2.0, 3.0], [-16.0, 0.0, 4.0]])
    np.testing.assert_allclose(metrics.normalise(L), L / np.abs(L.mean(axis=1, keepdims=True)))


def test_id_logit_correlation_is_pearson_r_per_row():
    rng = np.random.default_rng(0)
    L = rng.normal(size=(4, 50)) - np.linspace(0, 3, 50)  # logits falling with ID, plus noise
    frame = metrics.id_logit_correlation(L)
    ids = np.arange(50)
    assert frame["position"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(frame["r_id_L"], [stats.pearsonr(ids, row)[0] for row in L], atol=1e-12)
    np.testing.assert_allclose(frame["r_logid_L"], [stats.pearsonr(np.log1p(ids), row)[0] for row in L], atol=1e-12)
    assert (frame["r_id_L"] < 0).all()


def test_row_distance_is_the_rms_of_the_difference():
    X, Y = np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([[3.0, 4.0], [1.0, 2.0]])
    np.testing.assert_allclose(metrics.row_distance(X, Y), [5 / math.sqrt(2), 0.0])


def test_position_distance_is_each_rows_mean_distance_to_the_others():
    X = np.random.default_rng(1).normal(size=(5, 30))
    expected = [np.mean([np.sqrt(((X[i] - X[j]) ** 2).mean()) for j in range(5) if j != i]) for i in range(5)]
    np.testing.assert_allclose(metrics.position_distance(X), expected, rtol=1e-8)  # Gram identity's rounding
    np.testing.assert_allclose(metrics.position_distance(X - 100), expected, rtol=1e-8)
    assert np.isnan(metrics.position_distance(X[:1])).all()


def test_top_k_keeps_no_vocabulary_sized_array_alive():
    """The result owns its memory: a suite keeps [T, k] per run, not the [T, V] argsort behind it."""
    from compare.measures.metrics import top_k

    P = np.random.default_rng(0).random((3, 1000))
    ids, probs = top_k(P, 5)
    for a in (ids, probs):
        assert a.base is None or a.base.size == a.size


def test_row_moments_are_each_rows_mean_and_population_std():
    L = np.array([[1.0, 2.0, 3.0, 6.0], [-5.0, -5.0, -5.0, -5.0]])
    frame = metrics.row_moments(L)
    assert frame["position"].tolist() == [0, 1]
    np.testing.assert_allclose(frame["L_mean"], [3.0, -5.0])
    np.testing.assert_allclose(frame["L_std"], [math.sqrt((4 + 1 + 0 + 9) / 4), 0.0])



_THREADS_PROBE = """
import sys, numpy as np
from compare.measures import metrics
import torch
torch.set_num_threads(1)  # as every study task does, in both executors
L = np.random.default_rng(0).normal(-100, 3, size=(14, 50280)).astype(np.float32)
values = np.concatenate([metrics.id_logit_correlation(L)[["r_id_L", "r_logid_L"]].to_numpy().ravel(),
                         metrics.position_distance(L)])
sys.stdout.write(values.tobytes().hex())
"""


def test_cross_model_metrics_do_not_depend_on_numpy_blas_threads():
    # A Ray worker starts with OMP_NUM_THREADS=1, the embedded executor without it; both fix torch's
    # threads. With numpy BLAS matmuls, r_id_L and the position distances then differed in the last
    # bits between the two executors (bench_study, 20 prompts).
    import os
    import subprocess
    import sys
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out = [subprocess.run([sys.executable, "-c", _THREADS_PROBE], env=env, check=True,
                          capture_output=True, text=True).stdout
           for env in (base, {**base, "OMP_NUM_THREADS": "1"})]
    assert out[0] == out[1]


@pytest.mark.parametrize("seed", range(4))
def test_spearman_equals_scipys_with_ties(seed):
    """The report's layer trend (section 6): hit rates tie often (0, 1, repeated fractions)."""
    rng = np.random.default_rng(seed)
    layers = np.arange(24)
    rate = rng.integers(0, 5, 24) / 4  # five values over 24 layers: many ties
    assert metrics.spearman(layers, rate) == pytest.approx(stats.spearmanr(layers, rate).statistic, abs=1e-12)
    assert metrics.spearman(layers, -layers) == -1.0
    assert math.isnan(metrics.spearman(layers, np.ones(24)))  # a constant rate has no rank order
