"""Prompt suites: one dataclass config per suite and a `generate` that yields `Prompt`s.

A prompt is defined in one *source* tokenizer (`source`, "mamba" by default): text suites are
encoded by it, ID suites give their IDs in it. `build` derives the other model's variants from
the source IDs (see `datasets_gen.align`). Every suite takes an explicit `numpy` generator, so the
same seed gives the same prompts; none keeps RNG state of its own.

| suite           | prompt                                              | target                   |
|-----------------|-----------------------------------------------------|--------------------------|
| natural         | IOI sentence, ABBA or BABA name order               | the indirect object      |
| monotone        | one token × `length`                                | the same token           |
| periodic        | a cycle of ≥ 2 tokens repeated to `length`          | the next cycle element   |
| repeated_random | a random block of `block_length` tokens, twice      | the block's first token  |
| custom          | the user's texts and ID lists                       | none                     |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from datasets_gen.tokenizers import MODELS, Vocab

CLASSIC_IOI = ("Mary", "John", "When {X} and {Y} went to the {place}, {S} gave a {object} to",
               "store", "drink")
"""The IOI paper's sentence: "When Mary and John went to the store, John gave a drink to" → " Mary"."""

IOI_TEMPLATES = (
    CLASSIC_IOI[2],
    "After {X} and {Y} went to the {place}, {S} gave a {object} to",
    "While {X} and {Y} were working at the {place}, {S} gave a {object} to",
    "Then, {X} and {Y} had a long day at the {place}. {S} gave a {object} to",
)
NAMES = ("Mary", "John", "Tom", "James", "Dan", "Sarah", "Paul", "Anna", "Mark", "Lisa", "Kate",
         "Mike", "Alice", "Bob", "David", "Emma", "Jack", "Laura", "Peter", "Rachel", "Steve",
         "Susan", "Kevin", "Amy", "Ryan", "Jessica", "Brian", "Adam", "Emily", "Daniel")
PLACES = ("store", "park", "school", "hospital", "station", "garden", "restaurant", "office")
OBJECTS = ("drink", "book", "ring", "kiss", "snack", "bone", "necklace", "basketball")


@dataclass(frozen=True)
class Prompt:
    """One prompt in its source tokenizer; `target_id` is None where no next token is expected."""

    suite: str
    id: str
    text: str
    source: str
    source_ids: tuple[int, ...]
    target_id: int | None


def _positive(value: int, field: str) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{field}: must be an integer ≥ 1, got {value!r}")


def _source_of(source: str) -> None:
    if source not in MODELS:
        raise ValueError(f"source: unknown model {source!r}; allowed values are {list(MODELS)}")


def single_token(token: int | str, vocab: Vocab, field: str) -> int:
    """The ID of `token` (an ID or a string that must encode to exactly one token)."""
    if isinstance(token, str):
        ids = vocab.encode(token)
        if len(ids) != 1:
            raise ValueError(f"{field}: {token!r} is {len(ids)} tokens in the {vocab.name} "
                             "tokenizer; allowed values are strings that encode to one token")
        return ids[0]
    vocab.check_ids([token], field)
    return token


def repeat(cycle: list[int], length: int) -> list[int]:
    """`cycle` repeated and cut to `length` tokens: the prompt of a periodic pattern."""
    return [cycle[k % len(cycle)] for k in range(length)]


def check_everywhere(ids: list[int], vocabs: dict[str, Vocab], field: str) -> None:
    """Raise naming `field` unless every ID is in every model's vocabulary."""
    for vocab in vocabs.values():
        vocab.check_ids(ids, field)


def sane_token(rng: np.random.Generator, vocabs: dict[str, Vocab], source: str) -> int:
    """A random source ID whose text is printable ASCII and is one token in every tokenizer.

    Rejecting special, byte-fragment and whitespace-only tokens keeps random prompts readable;
    requiring one token everywhere makes `aligned` a token-for-token copy, so a random prompt is
    never flagged and means the same to both models. The ID is also below every vocabulary size,
    so `same_ids` is valid for both.
    """
    limit = min(v.size for v in vocabs.values())
    while True:
        token_id = int(rng.integers(2, limit))
        text = vocabs[source].decode([token_id])
        if (text.strip() and text.isascii() and text.isprintable()
                and vocabs[source].encode(text) == [token_id]
                and all(len(v.encode(text)) == 1 for v in vocabs.values())):
            return token_id


class _Suite:
    """Shared plumbing: the common checks and turning source IDs into a `Prompt`."""

    name: ClassVar[str]
    n: int
    source: str

    def check(self) -> None:
        _positive(self.n, f"{self.name}.n")
        _source_of(self.source)

    def prompt(self, index: int, ids: list[int], target_id: int | None,
               vocabs: dict[str, Vocab], text: str | None = None) -> Prompt:
        text = vocabs[self.source].decode(ids) if text is None else text
        return Prompt(self.name, f"{self.name}-{index:05d}", text, self.source, tuple(ids),
                      target_id)

    def tokens_at(self, i: int, given: tuple, field: str, vocabs: dict[str, Vocab],
                  rng: np.random.Generator, count: int) -> list[int]:
        """`given[i]` (IDs or one-token strings) while it lasts, then `count` random sane tokens.

        Either way the IDs must exist in every vocabulary, since `same_ids` feeds them to both.
        """
        ids = ([single_token(t, vocabs[self.source], field) for t in given[i]] if i < len(given)
               else [sane_token(rng, vocabs, self.source) for _ in range(count)])
        check_everywhere(ids, vocabs, field)
        return ids


@dataclass(frozen=True)
class NaturalConfig(_Suite):
    """IOI prompts; prompt 0 is the classic sentence, the rest alternate ABBA and BABA orders."""

    name: ClassVar[str] = "natural"
    n: int = 32
    names: tuple[str, ...] = NAMES
    places: tuple[str, ...] = PLACES
    objects: tuple[str, ...] = OBJECTS
    templates: tuple[str, ...] = IOI_TEMPLATES
    source: str = "mamba"

    def check_names(self, vocabs: dict[str, Vocab]) -> None:
        """Each name, with its leading space, must be one token in both tokenizers."""
        if len(set(self.names)) < 2:
            raise ValueError("natural.names: need at least 2 distinct names")
        for model, vocab in vocabs.items():
            for name in self.names:
                single_token(" " + name, vocab, f"natural.names ({model})")

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        self.check()
        self.check_names(vocabs)
        source = vocabs[self.source]
        prompts = []
        for i in range(self.n):
            if i == 0:
                io, s, template, place, obj = CLASSIC_IOI
                first = io
            else:
                io, s = (self.names[j] for j in rng.choice(len(self.names), 2, replace=False))
                template = self.templates[int(rng.integers(len(self.templates)))]
                place = self.places[int(rng.integers(len(self.places)))]
                obj = self.objects[int(rng.integers(len(self.objects)))]
                # Odd prompts ABBA (IO named first), even ones BABA: both orders, balanced.
                first = io if i % 2 else s
            second = s if first == io else io
            text = template.format(X=first, Y=second, S=s, place=place, object=obj)
            target = single_token(" " + io, source, "natural.names")
            prompts.append(self.prompt(i, source.encode(text), target, vocabs, text))
        return prompts


@dataclass(frozen=True)
class MonotoneConfig(_Suite):
    """`tokens` (strings or IDs) each repeated `length` times; beyond them, random sane tokens."""

    name: ClassVar[str] = "monotone"
    n: int = 8
    tokens: tuple[int | str, ...] = ("123",)
    length: int = 14
    source: str = "mamba"

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        self.check()
        _positive(self.length, "monotone.length")
        given = tuple((t,) for t in self.tokens)
        prompts = []
        for i in range(self.n):
            (token,) = self.tokens_at(i, given, f"monotone.tokens[{i}]", vocabs, rng, 1)
            prompts.append(self.prompt(i, [token] * self.length, token, vocabs))
        return prompts


@dataclass(frozen=True)
class PeriodicConfig(_Suite):
    """`cycles` (IDs or strings) repeated to `length`; beyond them, random cycles of `period`."""

    name: ClassVar[str] = "periodic"
    n: int = 8
    cycles: tuple[tuple[int | str, ...], ...] = ((42, 69), (4200, 6660))
    period: int = 2
    length: int = 14
    source: str = "mamba"

    def check(self) -> None:
        super().check()
        _positive(self.length, "periodic.length")
        for field, p in [("periodic.period", self.period)] + [
                (f"periodic.cycles[{i}]", len(c)) for i, c in enumerate(self.cycles)]:
            if p < 2:
                raise ValueError(f"{field}: period {p} is too short; allowed values are ≥ 2")

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        self.check()
        prompts = []
        for i in range(self.n):
            cycle = self.tokens_at(i, self.cycles, f"periodic.cycles[{i}]", vocabs, rng,
                                   self.period)
            prompts.append(self.prompt(i, repeat(cycle, self.length), cycle[self.length % len(cycle)],
                                       vocabs))
        return prompts


@dataclass(frozen=True)
class RepeatedRandomConfig(_Suite):
    """Induction: random sane block B, prompt B + B; the target is B[0], which followed the
    first copy of B."""

    name: ClassVar[str] = "repeated_random"
    n: int = 8
    block_length: int = 16
    source: str = "mamba"

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        self.check()
        _positive(self.block_length, "repeated_random.block_length")
        prompts = []
        for i in range(self.n):
            block = [sane_token(rng, vocabs, self.source) for _ in range(self.block_length)]
            prompts.append(self.prompt(i, block * 2, block[0], vocabs))
        return prompts


@dataclass(frozen=True)
class CustomConfig(_Suite):
    """The user's own `texts` (encoded by `source`) and `ids` (in `source`), no target."""

    name: ClassVar[str] = "custom"
    texts: tuple[str, ...] = ()
    ids: tuple[tuple[int, ...], ...] = ()
    source: str = "mamba"

    @property
    def n(self) -> int:
        return len(self.texts) + len(self.ids)

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        if not self.n:
            raise ValueError("custom: texts and ids are both empty; give at least one prompt")
        self.check()
        source = vocabs[self.source]
        prompts = [self.prompt(i, source.encode(t), None, vocabs, t)
                   for i, t in enumerate(self.texts)]
        for j, ids in enumerate(self.ids):
            field = f"custom.ids[{j}]"
            if not ids:
                raise ValueError(f"{field}: empty; allowed values are non-empty ID lists")
            check_everywhere(list(ids), vocabs, field)
            prompts.append(self.prompt(len(self.texts) + j, list(ids), None, vocabs))
        return prompts


SUITES = {c.name: c for c in (NaturalConfig, MonotoneConfig, PeriodicConfig,
                              RepeatedRandomConfig, CustomConfig)}
"""Suite name → config class; `build` makes default configs from names."""

DEFAULT_SUITES = ("natural", "monotone", "periodic", "repeated_random")
