"""Alignment on text boundaries with the real tokenizers: multi-byte characters stay whole.

Oracles are the tokenizers themselves, called directly (not through `datasets_gen`): the aligned
GPT-2 IDs must decode to the text Mamba read, and a pair (a, b) must be a place where both models'
decoded prefixes are the same string and a prefix of that text. Hand-written layouts pin the
emoji and IOI cases.
"""
from __future__ import annotations

import unicodedata

import pandas as pd
import pytest

import compare as package
from conftest import build_gpt2, build_mamba_hf, shared_tokenizer
from compare.analyses.align import align
from compare.handle.vocabularies import load_vocab, same_tokens

IOI = "When Mary and John went to the store, John gave a drink to"
EMOJI = "I ❤️ 🐍 and 👨‍👩‍👧"
TEXTS = {
    "english": "The cat sat on the mat.",
    "ioi": IOI,
    "emoji": EMOJI,
    "hebrew": "שלום עולם, מה שלומך?",
    "cjk": "你好，世界。東京は晴れ。",
    "dollars": "It costs $$5 or $x$ in $$\\LaTeX$$",
    "backslashes": "C:\\path\\to\\file \\n not a newline \\\\",
    "combining": "q\u0307 x\u0323\u0301 Z\u0336a\u0336",  # no precomposed forms: NFC keeps them
    "newlines": "Title\n\nBody\n\n\nEnd",
    "spaces": "   leading and trailing   ",
}


@pytest.fixture(scope="module")
def neox():
    return shared_tokenizer("gpt-neox-20b")


@pytest.fixture(scope="module")
def gpt2():
    return shared_tokenizer("gpt2")


def decode(tokenizer, ids):
    return tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def text_pairs(tok_a, ids_a, tok_b, ids_b):
    """Brute force: every (a, b) after which both have read the same text, a prefix of both texts."""
    full_a, full_b = decode(tok_a, ids_a), decode(tok_b, ids_b)
    prefixes_b = {}
    for b in range(len(ids_b)):
        text = decode(tok_b, ids_b[: b + 1])
        if full_b.startswith(text):
            prefixes_b[text] = b
    pairs = []
    for a in range(len(ids_a)):
        text = decode(tok_a, ids_a[: a + 1])
        if full_a.startswith(text) and text in prefixes_b:
            pairs.append((a, prefixes_b[text]))
    return pairs


def test_the_hostile_texts_are_left_alone_by_the_neox_normaliser(neox):
    for text in TEXTS.values():  # premise: Mamba reads exactly these strings
        assert unicodedata.normalize("NFC", text) == text
        assert decode(neox, encode(neox, text)) == text


@pytest.mark.parametrize("name", TEXTS)
def test_aligned_ids_decode_to_exactly_the_text(name, neox, gpt2):
    text = TEXTS[name]
    aligned = align(encode(neox, text), neox, gpt2)
    assert decode(gpt2, aligned.ids) == text
    assert "\ufffd" not in decode(gpt2, aligned.ids)


@pytest.mark.parametrize("name", TEXTS)
def test_every_source_position_with_pieces_ends_on_the_same_text(name, neox, gpt2):
    ids = encode(neox, TEXTS[name])
    aligned = align(ids, neox, gpt2)
    assert len(aligned.pieces) == len(aligned.flags) == len(ids)
    assert [i for piece in aligned.pieces for i in piece] == aligned.ids
    end = 0
    for a, piece in enumerate(aligned.pieces):
        source_prefix = decode(neox, ids[: a + 1])
        end += len(piece)
        if piece:
            assert decode(gpt2, aligned.ids[:end]) == source_prefix
        else:  # inside a character split over several Mamba tokens: nothing to pair with
            assert not TEXTS[name].startswith(source_prefix) and aligned.flags[a]


def test_an_emoji_split_over_three_mamba_tokens_is_one_group(neox, gpt2):
    ids = encode(neox, " 🐍")
    assert len(ids) == 3  # premise: GPT-NeoX spends three byte-level tokens on the snake
    aligned = align(ids, neox, gpt2)
    assert aligned.pieces == [[], [], encode(gpt2, " 🐍")]
    assert aligned.flags == [True, True, True]


def test_a_plain_word_keeps_one_piece_per_token(neox, gpt2):
    aligned = align(encode(neox, IOI), neox, gpt2)
    assert aligned.ids == encode(gpt2, IOI) and not aligned.flagged


def test_ids_that_are_not_valid_utf8_are_flagged_not_hidden(neox, gpt2):
    snake_start = encode(neox, " 🐍")[0]  # bytes " \xf0\x9f": the IDs end inside a character
    aligned = align([42, snake_start], neox, gpt2)
    assert aligned.flags == [False, True]
    assert aligned.pieces[0] == encode(gpt2, "I") and aligned.pieces[1]


def test_token_bytes_are_exact_for_fragments_and_added_tokens(neox):
    vocab = load_vocab(neox, "mamba")
    first, second, third = encode(neox, " 🐍")
    assert [vocab.token_bytes(i) for i in (first, second, third)] == [
        b" \xf0\x9f", b"\x90", b"\x8d"]
    assert b"".join(vocab.token_bytes(i) for i in (first, second, third)) == " 🐍".encode()
    assert vocab.token_bytes(0) == b"<|endoftext|>"
    (two_spaces,) = [i for i in range(50254, 50277) if decode(neox, [i]) == "  "]
    assert vocab.token_bytes(two_spaces) == b"  "


def test_same_tokens_compares_bytes_not_texts(neox, gpt2):
    """Two different pieces of characters both decode to U+FFFD: the same text, not the same token."""
    a, b = load_vocab(neox, "mamba"), load_vocab(gpt2, "gpt2")
    snake = encode(neox, " 🐍")  # b" \xf0\x9f", b"\x90", b"\x8d"
    quote = encode(gpt2, "’")  # GPT-2: b"\xe2\x80", b"\x99"
    assert decode(neox, [snake[1]]) == decode(gpt2, [quote[1]]) == "\ufffd"
    assert same_tokens(a, [snake[1]], b, [quote[1]]) == [False]
    byte_90 = [i for i in range(len(gpt2)) if load_vocab(gpt2, "gpt2").token_bytes(i) == b"\x90"]
    mary_a, mary_b = encode(neox, " Mary"), encode(gpt2, " Mary")
    assert same_tokens(a, [snake[1], *mary_a], b, [*byte_90, *mary_b]) == [True, True]
    assert same_tokens(a, mary_a, b, encode(gpt2, " John")) == [False]


def pairs_of(result):
    return list(zip(result.cross["position"], result.cross["other_position"]))


@pytest.mark.parametrize("name", TEXTS)
def test_compare_aligned_pairs_exactly_where_both_read_the_same_text(name, real_vocab_models, neox, gpt2):
    result = package.compare(TEXTS[name], real_vocab_models, variant="aligned", progress=False)
    ids_a, ids_b = result.runs["mamba"].ids.tolist(), result.runs["gpt2"].ids.tolist()
    assert decode(gpt2, ids_b) == TEXTS[name]
    assert pairs_of(result) == text_pairs(neox, ids_a, gpt2, ids_b)


@pytest.mark.parametrize("name", TEXTS)
def test_compare_native_pairs_exactly_where_both_read_the_same_text(name, real_vocab_models, neox, gpt2):
    result = package.compare(TEXTS[name], real_vocab_models, variant="native", progress=False)
    ids_a, ids_b = result.runs["mamba"].ids.tolist(), result.runs["gpt2"].ids.tolist()
    assert pairs_of(result) == text_pairs(neox, ids_a, gpt2, ids_b)


def test_split_marks_every_pair_that_is_not_one_token_to_one_token(real_vocab_models):
    result = package.compare(EMOJI, real_vocab_models, variant="aligned", progress=False)
    # "I" | " ❤" 3→2 | VS16 3→1 | " 🐍" 3→3 | " and" | " 👨" 3→2 | ZWJ 2→2 | "👩" 3→2 | ZWJ | "👧" 3→2
    assert pairs_of(result) == [(0, 0), (3, 2), (6, 3), (9, 6), (10, 7), (13, 9), (15, 11),
                                (18, 13), (20, 15), (23, 17)]
    assert result.cross["split"].tolist() == [False, True, True, True, False, True, True, True,
                                              True, True]


def test_compare_aligned_ioi_pairs_every_position_unsplit(real_vocab_models):
    result = package.compare(IOI, real_vocab_models, variant="aligned", progress=False)
    assert pairs_of(result) == [(t, t) for t in range(14)]
    assert not result.cross["split"].any()


def test_native_pairs_canonically_equivalent_text_across_the_normaliser(real_vocab_models, neox, gpt2):
    # GPT-NeoX composes e + U+0301 into é (NFC); GPT-2 reads the two code points. The texts are
    # canonically equivalent, so the pairs go on after the é: c | caf·cafe | café | " ok".
    text = "cafe\u0301 ok"
    result = package.compare(text, real_vocab_models, variant="native", progress=False)
    ids_a, ids_b = result.runs["mamba"].ids.tolist(), result.runs["gpt2"].ids.tolist()
    assert ids_a == [68, 2320, 860, 8718] and ids_b == [66, 8635, 136, 223, 12876]
    assert decode(neox, ids_a) == "café ok" and decode(gpt2, ids_b) == text
    # "caf" (NeoX 1) and "cafe", "cafe" + half of U+0301 (GPT-2 1, 2) are read by one model only
    assert pairs_of(result) == [(0, 0), (2, 3), (3, 4)]
    assert result.cross["split"].tolist() == [False, True, False]


def test_a_suite_row_pairs_like_the_text(real_vocab_models, neox, gpt2):
    from datasets_gen import CustomConfig, build

    row = build(suites=[CustomConfig(texts=(EMOJI,))], tokenizers={"mamba": neox, "gpt2": gpt2})["custom"][0]
    # "I" is one token each; " ❤" is three GPT-NeoX tokens and two GPT-2 tokens, on the last
    assert row["gpt2_aligned_split"][:4] == [1, 0, 0, 2]
    assert row["gpt2_aligned_flags"][:4] == [False, True, True, True]
    by_row = package.compare(row, real_vocab_models, variant="aligned", progress=False)
    by_text = package.compare(EMOJI, real_vocab_models, variant="aligned", progress=False)
    pd.testing.assert_frame_equal(by_row.cross[["position", "other_position", "split"]],
                                  by_text.cross[["position", "other_position", "split"]])
