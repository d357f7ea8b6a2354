"""What ran: each checkpoint named (source, parameters, a digest of its weights), whether it is the
thesis's, and whether it models English at all.

The language check scores each model on `PARAGRAPH`, plain English written for this package: its
mean next-token loss (nats per token) against the paragraph's own unigram entropy in the model's
tokenizer. A model that does not beat the unigram distribution fitted to the very text it reads
(a baseline that knows the answer's frequencies and ignores context) does not model English, and no
number of the report describes a trained language model. Trained GPT-2 and Mamba-130m score far
below it; random weights score near log(vocabulary), far above.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from dataclasses import dataclass

import torch

from ..handle.model import Model

# Written for this package (no source text): plain prose of a few hundred tokens.
PARAGRAPH = (
    "The village stood at the edge of a wide river, and every morning the people walked down to the water "
    "to fill their buckets. In the spring the river rose and covered the low fields, so the farmers planted "
    "their crops on the hills above the town. The children went to a small school near the church, where an "
    "old teacher taught them to read, to write and to count. After school they ran along the bank, threw "
    "stones into the current and watched the boats carry wood and grain to the city in the south. In the "
    "evening the families sat together at long tables, ate bread and soup, and talked about the weather, the "
    "price of flour and the news that the travellers had brought. When the summer came, the days grew long "
    "and warm, and the whole village worked in the fields from dawn until the light began to fade. The men "
    "cut the wheat, the women tied it into bundles, and the older children carried water to everyone who "
    "was thirsty. At the end of the harvest there was a great feast in the square, with music, dancing and "
    "games that lasted late into the night. Then the autumn rain returned, the roads turned to mud, and the "
    "people stayed close to their fires, mending their tools and telling the old stories again. Each winter "
    "seemed longer than the one before, but each spring the river rose once more, and the life of the "
    "village began again as it always had."
)

# The thesis's checkpoints: the sources that name them, and the shapes their configs have.
THESIS_CHECKPOINTS = {
    "mamba": {"sources": ("mamba-130m", "state-spaces/mamba-130m", "state-spaces/mamba-130m-hf"),
              "layers": 24, "vocabulary": 50280, "hub": "state-spaces/mamba-130m(-hf)"},
    "gpt2": {"sources": ("gpt2", "openai-community/gpt2"), "layers": 12, "vocabulary": 50257,
             "hub": "gpt2 (openai-community/gpt2)"},
}
ROLE_FAMILY = ("mamba", "gpt2")  # the family each role of the report expects, in role order
THESIS, SAME_SHAPES, OTHER = "yes", "unverified", "no"


@dataclass(frozen=True)
class LanguageCheck:
    loss: float  # mean next-token cross-entropy on PARAGRAPH, nats per token
    unigram: float  # entropy of the paragraph's own token frequencies, nats per token
    n_tokens: int  # tokens scored (the paragraph's tokens after the first)

    @property
    def models_english(self) -> bool:
        return self.loss < self.unigram

    def verdict(self) -> str:
        word = "models English" if self.models_english else "does NOT model English"
        return (f"{word}: {self.loss:.2f} nats/token on a fixed English paragraph (n = {self.n_tokens} tokens) "
                f"against {self.unigram:.2f} for the paragraph's own unigram frequencies; random weights score "
                "near log(vocabulary)")


def unigram_entropy(ids: list[int]) -> float:
    """Entropy (nats) of the empirical distribution of `ids`: the loss of a unigram model fitted to them."""
    counts = Counter(ids)
    n = len(ids)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def language_check(handle: Model, text: str = PARAGRAPH) -> LanguageCheck:
    """`handle`'s mean next-token loss on `text` against the text's unigram entropy (same tokens scored)."""
    ids = handle.encode(text)
    if handle.max_positions is not None:
        ids = ids[: handle.max_positions]
    with torch.no_grad():
        L = handle.logits(ids)[0].double()
    logp = torch.log_softmax(L[:-1], dim=-1)
    target = torch.tensor(ids[1:], device=logp.device)
    loss = float(-logp.gather(1, target[:, None]).mean())
    return LanguageCheck(loss, unigram_entropy(ids[1:]), len(ids) - 1)


def parameter_count(handle: Model) -> int:
    """Distinct parameters (a tied embedding and LM head counted once)."""
    seen = {p.data_ptr(): p.numel() for p in handle.module.parameters()}
    return sum(seen.values())


def weights_digest(handle: Model) -> str:
    """The first 12 hex digits of SHA-256 over every tensor of the state dict (name, dtype, shape, bytes),
    in name order: two runs with the same digest ran the same weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(handle.module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def thesis_checkpoint(source, handle: Model, role: int) -> tuple[str, str]:
    """(THESIS / SAME_SHAPES / OTHER, why) for `handle` run in role `role` (0 the Mamba role, 1 GPT-2's)."""
    expected = THESIS_CHECKPOINTS[ROLE_FAMILY[role]]
    # the checkpoint's identity as a record (family, depth, vocabulary), compared whole
    shapes = (handle.family, handle.n_layers, handle.vocab_size) == (ROLE_FAMILY[role], expected["layers"],
                                                                      expected["vocabulary"])
    named = isinstance(source, (str, os.PathLike)) and os.fspath(source) in expected["sources"]
    if named and shapes:
        return THESIS, f"yes: loaded as {os.fspath(source)!r}, the thesis's {expected['hub']}"
    if shapes:
        return SAME_SHAPES, (f"unverified: the shapes of the thesis's {expected['hub']} ({expected['layers']} layers, "
                             f"{expected['vocabulary']:,} tokens), but loaded from {source_text(source)!r}, not by its Hub "
                             "name; compare the digest with the Hub checkpoint's")
    return OTHER, (f"no: a {handle.family} model with {handle.n_layers} layers and {handle.vocab_size:,} tokens; the "
                   f"thesis's is {expected['hub']} ({expected['layers']} layers, {expected['vocabulary']:,} tokens)")


def source_text(source) -> str:
    """How the report names where a model came from: the path, alias or Hub id it was given as."""
    return f"loaded Model {source.name!r}" if isinstance(source, Model) else os.fspath(source)
