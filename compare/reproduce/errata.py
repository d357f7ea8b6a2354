"""Section 10: deviations and errata, each computed by a check, and the choices this package made.

Each check is a pure function of tokenizers (or counts) and of what the thesis writes, passed in as
arguments with the thesis's text as default, so a test can feed it a wrong fact and see it fail.
A check returns a `Check` whose status is one of `STATUSES`: the erratum is confirmed (the
tokenizers contradict the thesis's text), the thesis is correct, or the check was not applicable
(the models run do not use the thesis's tokenizers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..vocabularies import KNOWN, token_texts
from .plan import PRINTED_REPEATS, REPEATED, REPEATED_COUNT

CONFIRMED, CORRECT, NOT_APPLICABLE = "erratum confirmed", "thesis correct", "not applicable"
STATUSES = (CONFIRMED, CORRECT, NOT_APPLICABLE)
NEOX, GPT2 = KNOWN[50280], KNOWN[50257]  # the thesis's tokenizers (GPT-NeoX-20B for Mamba, GPT-2's BPE)
THESIS_MAX_ID = 50279  # eq. 7: L's columns run 0 … 50,279


@dataclass(frozen=True)
class Erratum:
    """One place where the thesis's text may be wrong: where, what it writes, what the check compares."""
    key: str
    where: str
    thesis: str
    compares: str


FIG10 = Erratum("fig10_mary_ids", "Fig. 10 caption", "' Mary' is 6393 in GPT-2 and 5335 in GPT-NeoX",
                "the caption's ID of ' Mary' per tokenizer against the ID each tokenizer encodes it to")
FIG19 = Erratum("fig19_caption", "Fig. 19 caption, §6.4.2", "caption: [4200, 6660] = ['Mon', '],']; text: 582 is '),'",
                "each ID's text as the caption/text writes it against GPT-NeoX's decoding of the ID alone")
EQ9 = Erratum("eq9_token_count", "eq. 9", f"the {len(REPEATED) * PRINTED_REPEATS}-character string {REPEATED!r} × "
              f"{PRINTED_REPEATS} is {REPEATED_COUNT} tokens",
              "the count the thesis gives against the tokens GPT-NeoX encodes the printed string to")
EQ6 = Erratum("eq6_divisor", "eq. 6, eq. 7", "K = L / (|ΣL| / max(ID)), the sum over L's columns 0 … 50,279",
              "the columns summed (max(ID) + 1) against the divisor max(ID), and those columns against the "
              "tokenizer's vocabulary (columns past it are padding)")
FIG12 = Erratum("fig12_caption", "Fig. 12 caption, §6.2", "caption: the bump is GPT-2's; text: Mamba's",
                "the model the caption names against the model the text and Figs. 13–14 name (a check of the "
                "thesis's text, not of a tokenizer); beside it, the bump positions measured here (section 3)")
ERRATA = (FIG10, FIG19, EQ9, EQ6, FIG12)


@dataclass
class Check:
    erratum: Erratum
    status: str  # one of STATUSES
    found: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        e = self.erratum
        return {"key": e.key, "where": e.where, "thesis": e.thesis, "compares": e.compares, "status": self.status,
                "found": self.found}


def recognise(tokenizer) -> str | None:
    """"gpt-neox-20b" or "gpt2" when `tokenizer` is one of the thesis's tokenizers (size and special
    tokens at their IDs, as `vocabularies` recognises them), else None."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for name, known in (("gpt-neox-20b", NEOX), ("gpt2", GPT2)):
        if len(tokenizer) == known.size and all(vocab.get(t) == i for t, i in known.special.items()):
            return name
    return None


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def mary_ids(neox, gpt2, caption: dict[str, int] | None = None, token: str = " Mary") -> Check:
    """Fig. 10's caption: the IDs of " Mary" it gives each tokenizer against what each encodes."""
    caption = {"gpt2": 6393, "gpt-neox-20b": 5335} if caption is None else caption
    found = {"gpt2": _encode(gpt2, token), "gpt-neox-20b": _encode(neox, token)}
    single = {k: v[0] for k, v in found.items() if len(v) == 1}
    swapped = single == {"gpt2": caption["gpt-neox-20b"], "gpt-neox-20b": caption["gpt2"]}
    wrong = single != caption
    return Check(FIG10, CONFIRMED if wrong else CORRECT, {"caption": caption, "encoded": found, "swapped": swapped})


def fig19_caption(neox, caption: dict[int, str] | None = None, text: dict[int, str] | None = None) -> Check:
    """Fig. 19's caption writes [4200, 6660] as [Mon, "],"]; the text calls 582 a token close to 6660."""
    caption = {4200: "Mon", 6660: "],"} if caption is None else caption
    text = {582: "),"} if text is None else text
    ids = [*caption, *text]
    decoded = dict(zip(ids, token_texts(neox, ids)))
    wrong = {i: {"caption": t, "tokenizer": decoded[i]} for i, t in {**caption, **text}.items() if decoded[i] != t}
    return Check(FIG19, CONFIRMED if wrong else CORRECT, {"decoded": decoded, "differs": wrong})


def repeated_count(neox, claimed: int = REPEATED_COUNT, repeats: int = PRINTED_REPEATS, unit: str = REPEATED) -> Check:
    """eq. 9 prints `unit` × `repeats` (48 characters) and says it is `claimed` tokens."""
    ids = _encode(neox, unit * repeats)
    return Check(EQ9, CONFIRMED if len(ids) != claimed else CORRECT,
                 {"claimed": claimed, "tokens": len(ids), "distinct_ids": sorted(set(ids)),
                  "characters": len(unit) * repeats})


def eq6_divisor(vocab_size: int, max_id: int = THESIS_MAX_ID, divisor: int | None = None,
                head_rows: int | None = None) -> Check:
    """eq. 6 divides ΣL over IDs 0 … max(ID) by max(ID): one column too few, over padded columns.

    vocab_size: the tokenizer's tokens; max_id: the last column eq. 7 sums (50,279); divisor: what
    eq. 6 divides by (max(ID)); head_rows: the LM-head rows of the model run, when known.
    """
    divisor = max_id if divisor is None else divisor
    summed = max_id + 1
    padding = summed - vocab_size
    return Check(EQ6, CONFIRMED if divisor != summed or padding > 0 else CORRECT,
                 {"columns_summed": summed, "divisor": divisor, "scale_of_K": summed / divisor,
                  "tokenizer_size": vocab_size, "padding_columns": padding, "lm_head_rows_run": head_rows})


def fig12_caption(caption_model: str = "GPT-2", text_model: str = "Mamba",
                  measured: dict[str, int] | None = None) -> Check:
    """Textual: Fig. 12's caption names one model, §6.2's text (and Figs. 13–14) put the bump in another."""
    return Check(FIG12, CONFIRMED if caption_model != text_model else CORRECT,
                 {"caption_model": caption_model, "text_model": text_model, "bump_positions_measured": measured})


def checks(first, second, *, bump_positions: dict[str, int] | None = None) -> list[Check]:
    """Every erratum, on the tokenizers of the two models run (`Model` handles): those about the
    thesis's tokenizers are not applicable (with why) when the models use others."""
    neox = first.tokenizer if recognise(first.tokenizer) == "gpt-neox-20b" else None
    gpt2 = second.tokenizer if recognise(second.tokenizer) == "gpt2" else None
    why_neox = (f"{first.name}'s tokenizer is not GPT-NeoX-20B ({NEOX.size:,} tokens, "
                f"{', '.join(f'{t} = {i}' for t, i in NEOX.special.items())}), the thesis's Mamba tokenizer")
    why_gpt2 = f"{second.name}'s tokenizer is not GPT-2's BPE ({GPT2.size:,} tokens, <|endoftext|> = 50256)"

    def unless(erratum, missing, run):
        return Check(erratum, NOT_APPLICABLE, {"why": missing}) if missing else run()

    return [unless(FIG10, why_neox if neox is None else why_gpt2 if gpt2 is None else None,
                   lambda: mary_ids(neox, gpt2)),
            unless(FIG19, None if neox is not None else why_neox, lambda: fig19_caption(neox)),
            unless(EQ9, None if neox is not None else why_neox, lambda: repeated_count(neox)),
            unless(EQ6, None if neox is not None else why_neox,
                   lambda: eq6_divisor(len(neox), head_rows=first.module.lm_head.out_features)),
            fig12_caption(measured=bump_positions)]
