"""Section 10: possible errata of the thesis, each checked against the thesis's own text.

Each check reads what the thesis writes from its text (`thesis_text`: the Markdown/LaTeX text file,
found beside the project in ../shared/thesis or named by $COMPARE_THESIS_TEXT) with a pattern, then
compares it with the tokenizers (or with another place of the same text). The parse is a pure
function of the text, so a test can feed it a text that says otherwise and see the verdict change.
A check's status is one of `STATUSES`:

    erratum confirmed       the thesis's text contradicts the tokenizers or itself
    not an erratum          they agree, after the thesis's own conventions (it drops every token's
                            leading space: <Mary>, <sales>)
    uncertain (extraction)  they differ where the text extraction may have lost characters (another
                            place of the same text writes the token as the tokenizer reads it)
    not applicable          the models run do not use the thesis's tokenizers, or the text is absent

and `magnitude` says what the erratum changes (a label, a count, a factor on K).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..handle.vocabularies import KNOWN, token_texts
from .plan import REPEATED

CONFIRMED, CORRECT, UNCERTAIN, NOT_APPLICABLE = ("erratum confirmed", "not an erratum", "uncertain (extraction)",
                                                 "not applicable")
STATUSES = (CONFIRMED, CORRECT, UNCERTAIN, NOT_APPLICABLE)
NEOX, GPT2 = KNOWN[50280], KNOWN[50257]  # the thesis's tokenizers (GPT-NeoX-20B for Mamba, GPT-2's BPE)
THESIS_FOLDER = Path(__file__).resolve().parents[2].parent / "shared" / "thesis"


@dataclass(frozen=True)
class Erratum:
    """One place where the thesis's text may be wrong: where, what it writes, what the check compares."""
    key: str
    where: str
    thesis: str
    compares: str


FIG10 = Erratum("fig10_mary_ids", "Fig. 10 caption", "ID_GPT2 = 6393 (left panel), ID_gpt-neox-20b = 5335 (right)",
                "the IDs the caption gives ' Mary' per tokenizer against the ID each tokenizer encodes it to")
FIG19 = Erratum("fig19_caption", "Fig. 19 caption, §6.4.2", "caption: [4200, 6660] = [<Mon>, <],>]; §6.4.2: the "
                "model first predicts 582, a token close to 6660", "each ID's text as the caption writes it against "
                "GPT-NeoX's decoding (leading spaces dropped, as the thesis writes every token), and against Fig. 21's "
                "caption, which writes the same IDs")
EQ9 = Erratum("eq9_token_count", "eq. 9, §6.3", "eq. 9 prints '123' repeated; §6.3: 14 tokens, all 10683",
              "the repeats printed in eq. 9 (encoded by GPT-NeoX) against the count the text gives")
EQ6 = Erratum("eq6_divisor", "eq. 6", "K = L / ((1/max(ID)) |Σ_ID L|), L's columns 0 … 50,279",
              "the columns summed (max(ID) + 1, read from L's last column in the text) against the divisor max(ID)")
FIG12 = Erratum("fig12_caption", "Fig. 12 caption, §6.2", "caption: model GPT-2; §6.2: the bump is in Mamba's K "
                "(Figs. 12, 13), none in GPT-2's (Fig. 14)", "the model Fig. 12's caption names against the model "
                "§6.2's text says Fig. 12 shows")
ERRATA = (FIG10, FIG19, EQ9, EQ6, FIG12)


@dataclass
class Check:
    erratum: Erratum
    status: str  # one of STATUSES
    found: dict[str, Any] = field(default_factory=dict)
    magnitude: str = ""  # what the erratum changes, in words (empty where nothing)

    def to_json(self) -> dict[str, Any]:
        e = self.erratum
        return {"key": e.key, "where": e.where, "thesis": e.thesis, "compares": e.compares, "status": self.status,
                "magnitude": self.magnitude, "found": self.found}


def thesis_text(path: str | os.PathLike | None = None) -> str | None:
    """The thesis's text: `path`, else $COMPARE_THESIS_TEXT, else the .txt in ../shared/thesis; None if absent."""
    candidates = [Path(path)] if path is not None else (
        [Path(os.environ["COMPARE_THESIS_TEXT"])] if os.environ.get("COMPARE_THESIS_TEXT")
        else sorted(THESIS_FOLDER.glob("*.txt")) if THESIS_FOLDER.is_dir() else [])
    for candidate in candidates:
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    if path is not None:
        raise FileNotFoundError(f"thesis_text: no such file {os.fspath(path)!r}")
    return None


def _caption(text: str, figure: int) -> str:
    match = re.search(rf"^{figure} pav\.:(.*)$", text, re.M)
    return match.group(1) if match else ""


def _latex_token(raw: str) -> str:
    """A token as the LaTeX writes it between < >: \\text{...} unwrapped, escapes (\\) removed, trimmed."""
    raw = re.sub(r"\\text\{(.*?)\}", r"\1", raw)
    return raw.replace("\\", "").strip()


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


def mary_ids(neox, gpt2, text: str, token: str = " Mary") -> Check:
    """Fig. 10's caption: the ID it gives ' Mary' in each tokenizer against what each encodes."""
    match = re.search(r"ID_\{GPT2\} = (\d+).*?ID_\{gpt-neox-20b\} = (\d+)", _caption(text, 10))
    if not match:
        return Check(FIG10, UNCERTAIN, {"why": "Fig. 10's caption gives no IDs in the text as extracted"})
    caption = {"gpt2": int(match.group(1)), "gpt-neox-20b": int(match.group(2))}
    found = {"gpt2": _encode(gpt2, token), "gpt-neox-20b": _encode(neox, token)}
    single = {k: v[0] for k, v in found.items() if len(v) == 1}
    swapped = single == {"gpt2": caption["gpt-neox-20b"], "gpt-neox-20b": caption["gpt2"]}
    return Check(FIG10, CONFIRMED if single != caption else CORRECT,
                 {"caption": caption, "encoded": found, "swapped": swapped},
                 "the caption's subscripts only (each number sits by its own tokenizer's panel); no number of "
                 "the thesis changes" if swapped else "")


def fig19_caption(neox, text: str) -> Check:
    """Fig. 19's caption writes [4200, 6660] as tokens; Fig. 21's writes the same IDs; §6.4.2 names 582."""
    def tokens(figure: int) -> list[str]:
        match = re.search(r"\[4200, 6660, \\dots\] = \[<(.*?)>, <(.*?)>, \\dots\]", _caption(text, figure))
        return [_latex_token(t) for t in match.groups()] if match else []

    fig19, fig21 = tokens(19), tokens(21)
    if not fig19:
        return Check(FIG19, UNCERTAIN, {"why": "Fig. 19's caption writes no tokens for [4200, 6660] as extracted"})
    ids = [4200, 6660, 582]
    decoded = dict(zip(ids, token_texts(neox, ids)))
    verdicts = {}
    for i, written in zip((4200, 6660), fig19):
        if written == decoded[i].lstrip():
            verdicts[i] = CORRECT  # the thesis drops leading spaces everywhere
        elif fig21 and fig21[(4200, 6660).index(i)] == decoded[i].lstrip():
            verdicts[i] = UNCERTAIN  # the same text writes it right elsewhere: characters lost in extraction
        else:
            verdicts[i] = CONFIRMED
    mention = re.search(r"\(\$582, (.*?)\$\)", text)
    written_582 = _latex_token(re.sub(r"\\[lr]angle", "", mention.group(1)).strip(" ,")) if mention else None
    verdicts[582] = UNCERTAIN if not written_582 else CORRECT if written_582 == decoded[582].lstrip() else CONFIRMED
    status = CONFIRMED if CONFIRMED in verdicts.values() else UNCERTAIN if UNCERTAIN in verdicts.values() else CORRECT
    return Check(FIG19, status, {"fig19_writes": dict(zip((4200, 6660), fig19)),
                                 "fig21_writes": dict(zip((4200, 6660), fig21)),
                                 "text_writes_582": written_582 or "(no token text survives the extraction)",
                                 "decoded": decoded, "verdict_per_id": verdicts},
                 "a caption's token text only; no number changes")


def repeated_count(neox, text: str, unit: str = REPEATED) -> Check:
    """eq. 9 prints `unit` repeated; §6.3 says how many tokens that is."""
    printed = re.search(r"„((?:%s)+)“\} \\\\ \\downarrow \\\\ \[10683" % re.escape(unit), text)
    claimed = re.search(r"10683\) pasikartojantis (\d+) kart", text)
    if not (printed and claimed):
        return Check(EQ9, UNCERTAIN, {"why": "eq. 9's string or §6.3's count is not in the text as extracted"})
    ids = _encode(neox, printed.group(1))
    claimed = int(claimed.group(1))
    return Check(EQ9, CONFIRMED if len(ids) != claimed else CORRECT,
                 {"printed_characters": len(printed.group(1)), "printed_repeats": len(printed.group(1)) // len(unit),
                  "tokens": len(ids), "distinct_ids": sorted(set(ids)), "claimed": claimed},
                 f"the input length: the printed string is {len(ids)} tokens, the text and Table 1 use {claimed} "
                 f"(this report feeds {claimed} × 10683, as eq. 9's ID list)" if len(ids) != claimed else "")


def eq6_divisor(text: str) -> Check:
    """eq. 6 divides Σ_ID L by max(ID); L's columns (eq. 7) run 0 … max(ID): one more column than the divisor."""
    formula = re.search(r"K_\{ID\}\^T = \\frac\{L_\{ID\}\^T\}\{\\frac\{1\}\{\\max\(ID\)\}", text)
    last = re.findall(r"L_\{(\d+)\}\^0 \\\\", text)
    if not (formula and last):
        return Check(EQ6, UNCERTAIN, {"why": "eq. 6's divisor or L's last column is not in the text as extracted"})
    max_id = int(last[0])
    factor = (max_id + 1) / max_id
    return Check(EQ6, CONFIRMED, {"divisor": "max(ID)", "max_id": max_id, "columns_summed": max_id + 1,
                                  "scale_of_K": factor},
                 f"negligible: every K is {factor:.6f} × its value with the mean (a factor {factor - 1:.1e} off); "
                 "the padding columns the sum includes are measured in section 3")


def fig12_caption(text: str, measured: dict[str, int] | None = None) -> Check:
    """Fig. 12's caption names a model; §6.2's text says whose K Fig. 12 shows the bump in."""
    caption = re.search(r"Modelis ([\w-]+)\.?\s*$", _caption(text, 12))
    said = re.search(r"(\w[\w-]*) K skirstiniuose rastas .{0,40}?\(12, 13 pav\.\)", text)
    if not (caption and said):
        return Check(FIG12, UNCERTAIN, {"why": "Fig. 12's caption or §6.2's sentence is not in the text as extracted",
                                        "bump_positions_measured": measured})
    return Check(FIG12, CONFIRMED if caption.group(1) != said.group(1) else CORRECT,
                 {"caption_model": caption.group(1), "text_model": said.group(1), "bump_positions_measured": measured},
                 "a caption's label: which model Fig. 12 shows; no number changes")


def checks(first, second, *, text: str | None, bump_positions: dict[str, int] | None = None) -> list[Check]:
    """Every erratum, read from the thesis's `text` (None: absent) and checked on the tokenizers of the two
    models run (`Model` handles): those about the thesis's tokenizers are not applicable on others."""
    if text is None:
        return [Check(e, NOT_APPLICABLE, {"why": f"the thesis's text was not found (looked in {THESIS_FOLDER} and "
                                                 "$COMPARE_THESIS_TEXT)"}) for e in ERRATA]
    neox = first.tokenizer if recognise(first.tokenizer) == "gpt-neox-20b" else None
    gpt2 = second.tokenizer if recognise(second.tokenizer) == "gpt2" else None
    why_neox = (f"{first.name}'s tokenizer is not GPT-NeoX-20B ({NEOX.size:,} tokens, "
                f"{', '.join(f'{t} = {i}' for t, i in NEOX.special.items())}), the thesis's Mamba tokenizer")
    why_gpt2 = f"{second.name}'s tokenizer is not GPT-2's BPE ({GPT2.size:,} tokens, <|endoftext|> = 50256)"

    def unless(erratum, missing, run):
        return Check(erratum, NOT_APPLICABLE, {"why": missing}) if missing else run()

    return [unless(FIG10, why_neox if neox is None else why_gpt2 if gpt2 is None else None,
                   lambda: mary_ids(neox, gpt2, text)),
            unless(FIG19, None if neox is not None else why_neox, lambda: fig19_caption(neox, text)),
            unless(EQ9, None if neox is not None else why_neox, lambda: repeated_count(neox, text)),
            eq6_divisor(text), fig12_caption(text, bump_positions)]
