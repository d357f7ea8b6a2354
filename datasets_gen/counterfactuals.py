"""Counterfactual pairs for activation patching on the IOI sentence (Wang et al. 2022).

An IOI prompt names two people, the indirect object IO and the subject S, then repeats S:
"When Mary and John went to the store, John gave a drink to" → " Mary". Its corruptions:

| kind       | the corrupt prompt                                   | example (S2 position)         |
|------------|------------------------------------------------------|-------------------------------|
| abc        | a third name C replaces the repeated subject          | "..., Paul gave a drink to"   |
| name_swap  | the repeated subject becomes the indirect object      | "..., Mary gave a drink to"   |

In both, answer = " IO" and wrong = " S" (the clean run's answer and the name it must not
give): patching recovers logit[answer] − logit[wrong]. abc removes the information "who was
repeated" without proposing another answer; name_swap flips it, so the corrupt run prefers S.

Every name (with its leading space) must be one token in every tokenizer, and each corrupt
prompt must have as many tokens as its clean prompt in every tokenizer (patching replaces
position by position); both are checked (`compare.analyses.rows.one_token`, `same_length`: the
checks a suite row read at run time for a model without columns passes too), and a failure names
the name or the pair. Pure functions: the third name is drawn from an explicit generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compare.analyses.rows import one_token, same_length
from compare.handle.vocabularies import Vocab

KINDS = ("abc", "name_swap")


@dataclass(frozen=True)
class IOI:
    """One IOI prompt's choices: `first` is whichever of io, s is named first (ABBA or BABA)."""
    io: str
    s: str
    first: str
    template: str  # with {X}, {Y} (the two names in order), {S}, {place}, {object}
    place: str
    object: str

    def text(self, repeated: str) -> str:
        second = self.s if self.first == self.io else self.io
        return self.template.format(X=self.first, Y=second, S=repeated, place=self.place, object=self.object)


def corruptions(ioi: IOI, third: str) -> dict[str, str]:
    """The corrupt prompt of each kind in `KINDS` (text only; `pairs` checks the tokens)."""
    return {"abc": ioi.text(third), "name_swap": ioi.text(ioi.io)}


def pairs(ioi: IOI, third: str, vocabs: dict[str, Vocab]) -> list[dict]:
    """The rows of one IOI prompt, one per kind in `KINDS`: kind, clean, corrupt, answer, wrong,
    and per tokenizer family of `vocabs` the token IDs of both prompts, the answer and the wrong answer."""
    if third in (ioi.io, ioi.s):
        raise ValueError(f"third: {third!r} must differ from the indirect object {ioi.io!r} and the subject {ioi.s!r}")
    ids = {name: {model: one_token(" " + name, vocab, "names") for model, vocab in vocabs.items()}
           for name in (ioi.io, ioi.s, third)}
    clean = ioi.text(ioi.s)
    rows = []
    for kind, corrupt in corruptions(ioi, third).items():
        row = {"kind": kind, "clean": clean, "corrupt": corrupt, "answer": " " + ioi.io, "wrong": " " + ioi.s}
        for model, vocab in vocabs.items():
            clean_ids, corrupt_ids = same_length(clean, corrupt, vocab, kind)
            row.update({f"{model}_clean_ids": clean_ids, f"{model}_corrupt_ids": corrupt_ids,
                        f"{model}_answer_id": ids[ioi.io][model], f"{model}_wrong_id": ids[ioi.s][model]})
        rows.append(row)
    return rows


def third_names(iois: list[IOI], names: tuple[str, ...], rng: np.random.Generator) -> list[str]:
    """Each prompt's third name for the abc corruption, drawn from `names` (not its io or s)."""
    thirds = []
    for ioi in iois:
        others = [n for n in names if n not in (ioi.io, ioi.s)]
        if not others:
            raise ValueError(f"names: need a third name besides {ioi.io!r} and {ioi.s!r}, got {list(names)}")
        thirds.append(others[int(rng.integers(len(others)))])
    return thirds


def counterfactuals(iois: list[IOI], names: tuple[str, ...], vocabs: dict[str, Vocab],
                    rng: np.random.Generator) -> list[dict]:
    """`pairs` of every IOI prompt, each with its `third_names` draw."""
    return [row for ioi, third in zip(iois, third_names(iois, names, rng)) for row in pairs(ioi, third, vocabs)]

