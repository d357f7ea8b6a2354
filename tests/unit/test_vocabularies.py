"""A token's bytes (`Vocab.token_bytes`) and its shown text (`byte_text`) where the tokenizer has no
byte-level `tokenizers` backend: the entry read as bytes only where those bytes decode as the tokenizer does.

Expected bytes are written by hand from UTF-8: "’" (U+2019) is e2 80 99, which GPT-2 cuts into
the entries 'âĢ' (ID 447: e2 80) and 'Ļ' (ID 247: 99).
"""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models

from compare.handle.vocabularies import byte_text, load_vocab, same_tokens
from conftest import SHARED_TOKENIZERS, shared_tokenizer


@pytest.fixture(scope="module")
def python_gpt2():
    """GPT-2's vocab.json and merges.txt under transformers' Python byte-level BPE (`ClvpTokenizer`,
    the one left in transformers 5): no `tokenizers.Tokenizer` behind it."""
    from transformers.models.clvp.tokenization_clvp import ClvpTokenizer

    folder = SHARED_TOKENIZERS / "gpt2"
    if not (folder / "vocab.json").is_file():
        pytest.skip(f"real tokenizers not found at {SHARED_TOKENIZERS} (see shared/tokenizers/README.md)")
    tokenizer = ClvpTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    assert not hasattr(tokenizer, "backend_tokenizer")  # premise: the fallback is what reads it
    return tokenizer


@pytest.fixture(scope="module")
def byte_fallback():
    """A SentencePiece-style BPE with byte fallback: "’" has no entry, so it is three `<0xNN>` tokens;
    "\ufffd" is an entry of its own (a real character, not a byte)."""
    vocab = {"<unk>": 0, "<0xE2>": 1, "<0x80>": 2, "<0x99>": 3, "a": 4, "\ufffd": 5}
    tokenizer = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    assert tokenizer.encode("a’").ids == [4, 1, 2, 3]  # premise
    return tokenizer


def test_a_python_byte_level_tokenizer_gives_each_pieces_bytes(python_gpt2):
    vocab = load_vocab(python_gpt2, "gpt2")
    assert python_gpt2.decode([447]) == python_gpt2.decode([247]) == "\ufffd"  # what it read before
    assert [vocab.token_bytes(i) for i in (1026, 447, 247, 82, 50256)] == [
        b"It", b"\xe2\x80", b"\x99", b"s", b"<|endoftext|>"]


def test_a_python_byte_level_tokenizer_shows_pieces_as_bytes(python_gpt2):
    assert [byte_text(python_gpt2, i) for i in (1026, 447, 247, 82)] == ["It", "\\xe2\\x80", "\\x99", "s"]


def test_the_python_and_the_fast_gpt2_tokenizer_have_the_same_pieces(python_gpt2):
    fast = load_vocab(shared_tokenizer("gpt2"), "fast")
    slow = load_vocab(python_gpt2, "python")
    assert same_tokens(slow, [447, 247, 447], fast, [447, 247, 247]) == [True, True, False]


def test_byte_fallback_entries_are_their_bytes(byte_fallback):
    # '<0xE2>' is also six characters of the byte-level alphabet: b"<0xE2>" does not decode to "\ufffd"
    vocab = load_vocab(byte_fallback, "sp")
    assert [vocab.token_bytes(i) for i in (1, 2, 3, 4)] == [b"\xe2", b"\x80", b"\x99", b"a"]
    assert [byte_text(byte_fallback, i) for i in (1, 2, 3)] == ["\\xe2", "\\x80", "\\x99"]


def test_an_entry_that_is_the_replacement_character_is_its_utf8(byte_fallback):
    # a real character, not a byte: no reading of its entry as bytes, so its decoded text's bytes
    assert load_vocab(byte_fallback, "sp").token_bytes(5) == "\ufffd".encode()
    assert byte_text(byte_fallback, 5) == "\ufffd"
