"""Sections 1–2: what the tokenizers do to the thesis's inputs (eq. 3/8/9, Fig. 9) and token ID vs length (Fig. 10).

Only the two models' tokenizers are read here; no forward runs.
"""
from __future__ import annotations

import pandas as pd
from ..analyses.align import align  # the package's alignment (what compare's aligned variant uses)

from ..measures import metrics
from ..figures import thesis as thesis_figures
from ..figures.base import token_label
from ..handle.vocabularies import byte_text
from .context import Context
from .plan import (CYCLES, FIG9_COUNTS, IOI, IOI_NEOX_IDS, LITHUANIAN, MARY, REPEATED, REPEATED_COUNT,
                   REPEATED_ID_NEOX, THESIS_R)
from .report import Section
from .uncertainty import EXACT, correlation

CYCLE_CLAIMS = {(42, 69): "GPT-NeoX reads I, d; GPT-2 reads the same IDs as K, f, and 'I', 'd' as [40, 67] (Fig. 21)",
                (4200, 6660): "Fig. 19's caption writes them <Mon>, <],> and Fig. 21's <Mon>, <]),> (the thesis drops "
                              "leading spaces; see section 10); GPT-2 reads the same IDs as <sales>, <Thus> (Fig. 20)"}


def byte_label(tokenizer, token_id: int, text: str) -> str:
    """`token_label(text)`, or, where the token is part of a multi-byte character (its text alone decodes
    to U+FFFD, as Lithuanian 'ė' split in two), its bytes as escapes: '\\xc4' instead of the replacement character."""
    if "\ufffd" not in text:
        return token_label(text)
    shown = byte_text(tokenizer, token_id, text)
    if "\ufffd" in shown:  # its bytes are not known
        return token_label(text).replace("\ufffd", "\\ufffd")
    return "'" + shown + "'"


def token_ids(ctx: Context) -> Section:
    s = Section(1, "token_ids", "Token IDs of the thesis's inputs", "eq. 3/8, eq. 9, Figs. 9, 19–21")
    first, second = ctx.mamba, ctx.gpt2
    texts = {"IOI sentence": IOI, f"{REPEATED!r} × {REPEATED_COUNT}": REPEATED * REPEATED_COUNT,
             "Lithuanian sentence": LITHUANIAN}
    thesis_counts = {"IOI sentence": FIG9_COUNTS["english"], f"{REPEATED!r} × {REPEATED_COUNT}": REPEATED_COUNT,
                     "Lithuanian sentence": FIG9_COUNTS["lithuanian"]}
    counts, shown = [], []
    ids_of = {}
    for label, text in texts.items():
        for h in ctx.handles:
            ids = h.encode(text)
            ids_of[(label, h.name)] = ids
            counts.append({"text": label, "model": h.name, "n_tokens": len(ids), "thesis": thesis_counts[label]})
            shown.append({"text": label, "model": h.name, "n_tokens": len(ids), "ids": ", ".join(map(str, ids)),
                          "tokens": " ".join(byte_label(h.tokenizer, i, t) for i, t in zip(ids, h.decode_tokens(ids)))})
    n = {(c["text"], c["model"]): s.add(f"n_tokens[{c['text']}|{c['model']}]", f"{c['model']}", c["n_tokens"],
                                        "number of tokens the model's tokenizer encodes the text into "
                                        "(no special tokens added)", n=c["n_tokens"], uncertainty=EXACT,
                                        text=texts[c["text"]])
         for c in counts}
    ioi = ids_of[("IOI sentence", first.name)]
    same = s.add("ioi_ids_equal_eq8", f"{first.name}'s IDs equal eq. 8's", list(ioi) == list(IOI_NEOX_IDS),
                 "whether the first model's tokenizer encodes the IOI sentence to exactly the IDs of eq. 8",
                 n=len(ioi), uncertainty=EXACT, eq8=list(IOI_NEOX_IDS))
    s.row("IOI sentence: tokens (eq. 8, Fig. 9)", "14 tokens in both tokenizers; GPT-NeoX IDs as in eq. 8",
          [n[("IOI sentence", h.name)] for h in ctx.handles] + [same])
    rep = f"{REPEATED!r} × {REPEATED_COUNT}"
    rep_ids = {h.name: ids_of[(rep, h.name)] for h in ctx.handles}
    one_id = s.add("repeated_all_one_id", f"{first.name}: every token is ID {REPEATED_ID_NEOX}",
                   all(i == REPEATED_ID_NEOX for i in rep_ids[first.name]),
                   "whether every token of the repeated string is eq. 9's ID in the first model's tokenizer",
                   n=len(rep_ids[first.name]), uncertainty=EXACT, text=texts[rep])
    s.row(f"{rep} (eq. 9, as {REPEATED_COUNT * len(REPEATED)} characters)",
          f"{REPEATED_COUNT} × ID {REPEATED_ID_NEOX}", [n[(rep, h.name)] for h in ctx.handles] + [one_id])
    lt = [n[("Lithuanian sentence", h.name)] for h in ctx.handles]
    ratio = [s.add(f"lt_over_en[{h.name}]", f"Lithuanian ÷ English, {h.name}",
                   len(ids_of[("Lithuanian sentence", h.name)]) / len(ids_of[("IOI sentence", h.name)]),
                   "tokens of the Lithuanian translation divided by tokens of the English sentence",
                   n=2, uncertainty=EXACT + " (a ratio of two counts of one sentence pair)", lithuanian=LITHUANIAN, english=IOI) for h in ctx.handles]
    s.row("Lithuanian translation (Fig. 9)", "26 tokens against 14 in English (a tiktoken-based viewer; "
          "encoding unstated): Lithuanian costs more", lt + ratio)
    cycles = []
    for cycle in CYCLES:
        ids, reduced = ctx.cycle_ids(cycle)
        first_text = s.add(f"cycle_text[{cycle}|{first.name}]", f"{first.name} reads", first.decode_tokens(ids),
                           "each ID decoded alone by the first model's tokenizer", n=len(ids), uncertainty=EXACT,
                           ids=ids)
        second_text = s.add(f"cycle_text[{cycle}|{second.name}]", f"{second.name} reads the same IDs",
                            second.decode_tokens(ids), "each ID decoded alone by the second model's tokenizer",
                            n=len(ids), uncertainty=EXACT, ids=ids)
        aligned = align(ids, first.tokenizer, second.tokenizer)
        aligned_ids = s.add(f"cycle_aligned[{cycle}]", f"{second.name} aligned IDs", aligned.ids,
                            "the first model's tokens re-encoded one by one by the second tokenizer "
                            "(compare's aligned variant)", n=len(ids), uncertainty=EXACT, ids=ids)
        s.row(f"cycle {list(cycle)}" + (f" (reduced to {ids}: outside this vocabulary)" if reduced else ""),
              CYCLE_CLAIMS[tuple(cycle)], [first_text, second_text, aligned_ids])
        cycles.append({"cycle": str(list(cycle)), "ids": ", ".join(map(str, ids)),
                       f"{first.name} reads": " ".join(map(token_label, first.decode_tokens(ids))),
                       f"{second.name} reads": " ".join(map(token_label, second.decode_tokens(ids))),
                       f"{second.name} aligned IDs": ", ".join(map(str, aligned.ids))})
    frame = pd.DataFrame(counts)
    s.figure("counts", thesis_figures.token_counts(frame), "Tokens per text in each tokenizer; black ticks: "
             "the thesis's counts (Fig. 9, eq. 8/9).")
    s.frames["token_counts"] = frame
    s.table("tokens", pd.DataFrame(shown), "each text's tokens in each tokenizer: count, IDs, and each token's text")
    s.table("cycles", pd.DataFrame(cycles), "the periodic cycles' IDs as each tokenizer reads them, and their aligned IDs")
    return s


def id_vs_length(ctx: Context) -> Section:
    s = Section(2, "id_vs_length", "Token ID vs token length", "Fig. 10, Result 1")
    vocab, text, rows = {}, {}, []
    for h in ctx.handles:
        vocab[h.name] = metrics.length_table(range(h.vocab_size), ctx.vocab_texts(h))
        text[h.name] = metrics.token_lengths(h.tokenizer, IOI)
        for scope, table, what in (("text", text[h.name], "the IOI sentence's tokens (each occurrence)"),
                                   ("vocabulary", vocab[h.name], "every ID of the real vocabulary")):
            r = metrics.length_correlations(table)
            numbers = [s.add(f"{key}[{scope}|{h.name}]", f"{label}, {h.name}", r[key],
                             f"Pearson r between {x} and decoded length in characters, over {what}",
                             n=len(table), uncertainty=correlation(r[key], len(table)), log="log(1 + ID)" if key == "r_logid_len" else None)
                       for key, label, x in (("r_logid_len", "r(log ID, length)", "log(1 + ID)"),
                                             ("r_id_len", "r(ID, length)", "the token ID"))]
            rows.append((scope, h.name, numbers))
        rows_mary = text[h.name][text[h.name]["token"] == MARY]
        if len(rows_mary):
            s.add(f"mary_id[{h.name}]", f"ID of {MARY!r}, {h.name}", int(rows_mary["id"].iloc[0]),
                  "the ID the tokenizer gives the token", n=1, uncertainty=EXACT, token=MARY)
    for scope in ("text", "vocabulary"):
        s.row(f"r over {'the IOI sentence' if scope == 'text' else 'the whole vocabulary'}",
              f"R ≈ {THESIS_R} in both tokenizers (x axis: log ID; which r and which tokens unstated)",
              [n for sc, _, numbers in rows if sc == scope for n in numbers])
    mary = [n for n in s.numbers if n.key.startswith("mary_id")]
    if mary:
        s.row(f"ID of {MARY!r}", "caption: 6393 for GPT-2, 5335 for GPT-NeoX (swapped: see section 10)", mary)
    s.figure("scatter", thesis_figures.id_length_scatter(vocab, text, highlight=MARY),
             "Token length against 1 + token ID (log axis): the whole vocabulary in grey, the IOI sentence's "
             f"tokens in blue, {MARY!r} in red.")
    s.frames["vocabulary_lengths"] = pd.concat([t.assign(model=m) for m, t in vocab.items()], ignore_index=True)
    s.frames["text_lengths"] = pd.concat([t.assign(model=m) for m, t in text.items()], ignore_index=True)
    return s
