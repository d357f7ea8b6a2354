"""Prompt suites: one dataclass config per suite and a `generate` that yields `Prompt`s.

A prompt is defined in one *source* tokenizer (`source`, "mamba" by default): text suites are
encoded by it, ID suites give their IDs in it. `build` derives the other model's variants from
the source IDs (see `compare.analyses.align`). Every suite takes an explicit `numpy` generator, so the
same seed gives the same prompts; none keeps RNG state of its own.

| suite           | prompt                                              | target                   |
|-----------------|-----------------------------------------------------|--------------------------|
| natural         | IOI sentence, ABBA or BABA name order               | the indirect object      |
| monotone        | one token × `length`                                | the same token           |
| periodic        | a cycle of ≥ 2 tokens repeated to `length`          | the next cycle element   |
| repeated_random | a random block of `block_length` tokens, twice      | the block's first token  |
| custom          | the user's texts and ID lists                       | none                     |

Sizes are bounded (`MAX_PROMPTS` per suite, `MAX_TOKENS` per prompt) so that a typo such as
`length=10**8` is refused at once rather than run for hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from compare.analyses.rows import one_token
from compare.handle.vocabularies import Vocab, check_encodable
from datasets_gen.counterfactuals import IOI, counterfactuals, third_names
from datasets_gen.tokenizers import TOKENIZER_FAMILIES

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

MAX_PROMPTS = 100_000
"""Most prompts one suite may hold: far beyond a study's needs, well short of filling a disk."""
MAX_TOKENS = 65_536
"""Most tokens one prompt may hold: 64 times GPT-2's context of 1,024."""
TOKENS = "tokens (IDs or one-token strings)"


@dataclass(frozen=True)
class Prompt:
    """One prompt in its source tokenizer; `target_id` is None where no next token is expected."""

    suite: str
    id: str
    text: str
    source: str
    source_ids: tuple[int, ...]
    target_id: int | None


def count(value: Any, field: str, at_most: int, unit: str) -> int:
    """`value` as a Python int in 1..`at_most` (`unit`s); numpy integers pass, booleans do not."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{field}: must be an integer ≥ 1, got {value!r}")
    if value > at_most:
        raise ValueError(f"{field}: {value:,} is above the bound of {at_most:,} {unit}; "
                         f"allowed values are 1..{at_most:,}")
    return int(value)


def check_length(ids: list[int], field: str) -> None:
    """Raise naming `field` if a prompt is longer than `MAX_TOKENS`."""
    if len(ids) > MAX_TOKENS:
        raise ValueError(f"{field}: {len(ids):,} tokens is above the bound of {MAX_TOKENS:,} "
                         "tokens per prompt (MAX_TOKENS)")


def sequence(value: Any, field: str, of: str) -> tuple:
    """`value` as a tuple, refusing a string (a sequence of characters) and non-sequences."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        hint = f"; for a single one write ({value!r},)" if isinstance(value, str) else ""
        raise TypeError(f"{field}: must be a tuple of {of}, got {type(value).__name__} {value!r}{hint}")
    return tuple(value)


def _source_of(source: str) -> None:
    if source not in TOKENIZER_FAMILIES:
        raise ValueError(f"source: unknown model {source!r}; allowed values are {list(TOKENIZER_FAMILIES)}")


def single_token(token: int | str, vocab: Vocab, field: str) -> int:
    """The ID of `token` (an ID or a string that must encode to exactly one token)."""
    if isinstance(token, bool) or not isinstance(token, (int, np.integer, str)):
        raise TypeError(f"{field}: {token!r} is not a token; allowed values are token IDs and "
                        "strings that encode to one token")
    if isinstance(token, str):
        return one_token(token, vocab, field)
    vocab.check_ids([token], field)
    return int(token)


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
        count(self.n, f"{self.name}.n", MAX_PROMPTS, "prompts per suite (MAX_PROMPTS)")
        _source_of(self.source)

    def prompt(self, index: int, ids: list[int], target_id: int | None,
               vocabs: dict[str, Vocab], text: str | None = None) -> Prompt:
        check_length(ids, f"{self.name} prompt {index}")  # a long template: known once encoded
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
    """IOI prompts; prompt 0 is the classic sentence, the rest alternate ABBA and BABA orders. Each
    row also holds its counterfactuals for patching: the ABC corruption and the name swap."""

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

    def iois(self, rng: np.random.Generator) -> list[IOI]:
        """Each prompt's choices (names, order, template, place, object), drawn from `rng`."""
        iois = []
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
            iois.append(IOI(io, s, first, template, place, obj))
        return iois

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        self.check()
        self.check_names(vocabs)
        source = vocabs[self.source]
        prompts = []
        for i, ioi in enumerate(self.iois(rng)):
            text = ioi.text(ioi.s)
            target = single_token(" " + ioi.io, source, "natural.names")
            prompts.append(self.prompt(i, source.encode(text), target, vocabs, text))
        return prompts

    def counterfactuals(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[dict]:
        """Patching pairs of the suite's prompts (`datasets_gen.counterfactuals`: the ABC corruption
        and the name swap, answer and wrong answer, IDs per tokenizer); given a generator seeded as
        `generate`'s was, the clean prompts are `generate`'s."""
        self.check()
        self.check_names(vocabs)
        return counterfactuals(self.iois(rng), self.names, vocabs, rng)

    def thirds(self, rng: np.random.Generator) -> list[tuple[IOI, str]]:
        """Each prompt's choices and the third name of its abc corruption, drawn as `counterfactuals`
        draws them (text only, no tokenizer): from `build.suite_rng(seed, "natural")`, the built
        split's rows."""
        self.check()
        iois = self.iois(rng)
        return list(zip(iois, third_names(iois, self.names, rng)))


@dataclass(frozen=True)
class MonotoneConfig(_Suite):
    """`tokens` (strings or IDs) each repeated `length` times; beyond them, random sane tokens."""

    name: ClassVar[str] = "monotone"
    n: int = 8
    tokens: tuple[int | str, ...] = ("123",)
    length: int = 14
    source: str = "mamba"

    def check(self) -> None:
        super().check()
        count(self.length, "monotone.length", MAX_TOKENS, "tokens per prompt (MAX_TOKENS)")
        sequence(self.tokens, "monotone.tokens", TOKENS)

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        self.check()
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
        count(self.length, "periodic.length", MAX_TOKENS, "tokens per prompt (MAX_TOKENS)")
        count(self.period, "periodic.period", MAX_TOKENS, "tokens per prompt (MAX_TOKENS)")
        cycles = sequence(self.cycles, "periodic.cycles", "cycles")
        for field, p in [("periodic.period", self.period)] + [
                (f"periodic.cycles[{i}]", len(sequence(c, f"periodic.cycles[{i}]", TOKENS)))
                for i, c in enumerate(cycles)]:
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

    def check(self) -> None:
        super().check()
        # the prompt is the block twice
        count(self.block_length, "repeated_random.block_length", MAX_TOKENS // 2,
              "tokens per block (MAX_TOKENS / 2)")

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        self.check()
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

    def check(self) -> None:
        texts = sequence(self.texts, "custom.texts", "strings")
        id_lists = sequence(self.ids, "custom.ids", "ID lists")
        if not texts and not id_lists:
            raise ValueError("custom: texts and ids are both empty; give at least one prompt")
        super().check()
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"custom.texts[{i}]: must be a string, got {type(text).__name__} {text!r}")
            if not text:
                raise ValueError(f"custom.texts[{i}]: empty; allowed values are non-empty strings")
            check_encodable(text, f"custom.texts[{i}]")
        for j, ids in enumerate(id_lists):
            field = f"custom.ids[{j}]"
            ids = sequence(ids, field, "token IDs")
            if not ids:
                raise ValueError(f"{field}: empty; allowed values are non-empty ID lists")
            bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, (int, np.integer))]
            if bad:
                raise TypeError(f"{field}: {bad[:5]} are not token IDs; allowed values are integers")

    def generate(self, vocabs: dict[str, Vocab], rng: np.random.Generator) -> list[Prompt]:
        self.check()
        source = vocabs[self.source]
        prompts = []
        for i, text in enumerate(self.texts):
            ids = source.encode(text)
            check_length(ids, f"custom.texts[{i}]")
            prompts.append(self.prompt(i, ids, None, vocabs, text))
        for j, ids in enumerate(self.ids):
            field = f"custom.ids[{j}]"
            check_length(ids, field)
            check_everywhere(list(ids), vocabs, field)
            prompts.append(self.prompt(len(self.texts) + j, [int(i) for i in ids], None, vocabs))
        return prompts


SUITES = {c.name: c for c in (NaturalConfig, MonotoneConfig, PeriodicConfig,
                              RepeatedRandomConfig, CustomConfig)}
"""Suite name → config class; `build` makes default configs from names."""

DEFAULT_SUITES = ("natural", "monotone", "periodic", "repeated_random")
