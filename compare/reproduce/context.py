"""What every section of a report reads: the two models, the plan, the seed, shared results.

The Mamba role (the thesis's subject, the reference of every comparison) is the first model, the
GPT-2 role the second. Work several sections need (the IOI comparison, the vocabulary's texts) is
computed once and kept here for the length of one report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


from ..handle.vocabularies import token_texts
from ..analyses.comparison import Comparison, Stopped, compare
from ..handle.model import Model
from . import plan as thesis
from .plan import Plan


@dataclass
class Context:
    mamba: Model
    gpt2: Model
    plan: Plan
    seed: int
    stop: Any = None  # anything with is_set(); checked between steps
    thesis: str | None = None  # the thesis's text (`errata.thesis_text`), None where absent
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def handles(self) -> list[Model]:
        return [self.mamba, self.gpt2]

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.handles]

    def check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped("reproduce stopped; nothing was written")

    def cached(self, key, make):
        if key not in self._cache:
            self.check_stop()
            self._cache[key] = make()
        return self._cache[key]

    def vocab_texts(self, handle: Model) -> list[str]:
        """Each ID of the real vocabulary decoded on its own."""
        return self.cached(("texts", handle.name), lambda: token_texts(handle.tokenizer, range(handle.vocab_size)))

    def ioi(self, k_columns: str = "vocab") -> Comparison:
        """The IOI prompt through both models (aligned variant), " Mary" tracked."""
        return self.cached(("ioi", k_columns), lambda: compare(
            thesis.IOI, self.handles, variant="aligned", track=[thesis.MARY], progress=False,
            k_columns=k_columns, stop=self.stop))

    def repeated(self) -> Comparison:
        """eq. 9's input: REPEATED_COUNT × the ID of "123" (fed as IDs), aligned to GPT-2, "123" tracked."""
        def run():
            token = self.mamba.encode(thesis.REPEATED)[0]  # one token in the thesis's tokenizers
            return compare([token] * thesis.REPEATED_COUNT, self.handles, variant="aligned", track=[token],
                           progress=False, stop=self.stop)
        return self.cached("repeated", run)

    def cycle_ids(self, cycle: tuple[int, ...]) -> tuple[list[int], bool]:
        """The cycle's IDs for the first model, and whether they had to be reduced modulo its vocabulary
        (only on vocabularies smaller than the thesis's, e.g. tests' tiny models)."""
        V = self.mamba.vocab_size
        ids = [int(i) % V for i in cycle]
        if len(set(ids)) < len(ids):  # keep the cycle's tokens distinct
            ids = [(ids[0] + k) % V for k in range(len(ids))]
        return ids, any(i >= V for i in cycle)

    def periodic(self, cycle: tuple[int, ...], variant: str) -> Comparison:
        """The cycle repeated to `plan.periodic_length` tokens, through both models; its second token tracked."""
        def run():
            ids, _ = self.cycle_ids(cycle)
            prompt = (ids * self.plan.periodic_length)[: self.plan.periodic_length]
            return compare(prompt, self.handles, variant=variant, track=[ids[1]], progress=False, stop=self.stop)
        return self.cached(("periodic", cycle, variant), run)
