"""What a reproduction report holds: numbers with their definitions, sections, the report itself.

Every number the report shows is a `Number`: its value, what it is (`definition`) and how it was
computed (`parameters`). A section's "thesis says / measured here" table is a list of `Row`s,
whose measured cell is made of Numbers, so report.html shows nothing that report.json lacks.
Figures are matplotlib Figures (rendered once to PNG, `writing`), frames tidy DataFrames (Parquet).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..base.jsonsafe import plain


@dataclass
class Number:
    """One measured value. value: a float, int, bool, str, None (not measurable here) or a list of them."""

    key: str  # unique within its section
    label: str  # how the table names it, e.g. "r(log ID, length), mamba"
    value: Any
    definition: str
    parameters: dict[str, Any] = field(default_factory=dict)
    n: int | None = None  # how many observations the value summarises (tokens, positions, trials, ...)
    uncertainty: str | None = None  # an interval, a test, a spread, or `uncertainty.EXACT`

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "value": plain(self.value), "definition": self.definition,
                "n": self.n, "uncertainty": self.uncertainty, "parameters": plain(self.parameters)}

    def text(self) -> str:
        """The value as the table writes it (4 significant digits; lists comma-separated)."""
        return format_value(self.value)

    def sureness(self) -> str:
        """n and the interval, test or spread, as the page writes them after the value."""
        n = "n = ?" if self.n is None else f"n = {self.n:,}"
        return f"{n}; {self.uncertainty or 'no uncertainty stated'}"


@dataclass
class Row:
    """One line of a section's table: what the thesis says and the numbers measured here."""

    quantity: str
    thesis: str
    measured: list[Number]
    verdict: str = ""  # computed from `measured` by a rule the section states, or empty


@dataclass
class Section:
    number: int
    key: str  # file-name stem: figures/{key}_{name}.png, data/{key}_{name}.parquet
    title: str
    where: str  # where in the thesis, e.g. "Fig. 10, Result 1"
    rows: list[Row] = field(default_factory=list)
    numbers: list[Number] = field(default_factory=list)  # every number, those of the rows included
    figures: dict[str, Any] = field(default_factory=dict)  # name → matplotlib Figure
    captions: dict[str, str] = field(default_factory=dict)  # name → caption
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # plain sentences; token text in them is escaped on output
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # small frames shown as HTML tables
    table_definitions: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, label: str, value: Any, definition: str, *, n: int | None = None,
            uncertainty: str | None = None, **parameters) -> Number:
        """A new Number of this section (keys are unique within it); n and uncertainty as `Number`'s."""
        if any(x.key == key for x in self.numbers):
            raise ValueError(f"section {self.key}: number {key!r} added twice")
        number = Number(key, label, value, definition, parameters, n, uncertainty)
        self.numbers.append(number)
        return number

    def row(self, quantity: str, thesis: str, measured: list[Number], verdict: str = "") -> Row:
        row = Row(quantity, thesis, measured, verdict)
        self.rows.append(row)
        return row

    def table(self, name: str, frame: pd.DataFrame, definition: str) -> None:
        """A small frame shown as a table (and written whole into report.json)."""
        self.tables[name] = frame
        self.table_definitions[name] = definition

    def figure(self, name: str, fig, caption: str) -> None:
        """Add a figure; `name` is part of its file name, so a model name's '/' (a Hub id,
        "owner/name") becomes '--', as a study files its results (`study.spec.model_key`)."""
        name = name.replace("/", "--")
        self.figures[name] = fig
        self.captions[name] = caption


@dataclass
class Report:
    header: dict[str, Any]
    sections: list[Section]
    choices: list[dict[str, str]]

    def to_json(self) -> dict[str, Any]:
        return {"header": plain(self.header), "choices": self.choices, "sections": [{
            "number": s.number, "key": s.key, "title": s.title, "where": s.where,
            "rows": [{"quantity": r.quantity, "thesis": r.thesis, "measured": [n.key for n in r.measured],
                      "verdict": r.verdict} for r in s.rows],
            "numbers": [n.to_json() for n in s.numbers],
            "figures": [f"figures/{s.key}_{name}.png" for name in s.figures],
            "frames": [f"data/{s.key}_{name}.parquet" for name in s.frames],
            "tables": [{"name": name, "definition": s.table_definitions.get(name, ""),
                        "rows": plain(t.to_dict(orient="records"))} for name, t in s.tables.items()],
            "notes": s.notes} for s in self.sections]}


REPLACEMENT = "\ufffd"  # what decoding a lone byte of a multi-byte character gives


def format_value(value: Any) -> str:
    """A value as the page writes it: strings inside lists quoted (a token's spaces and punctuation stay
    visible: [' Mon', ']),']), U+FFFD written as the escape \\ufffd, never as the replacement character."""
    if value is None:
        return "—"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(f"'{format_value(v)}'" if isinstance(v, str) else format_value(v)
                               for v in value) + "]"
    if isinstance(value, str):
        return value.replace(REPLACEMENT, "\\ufffd")
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3e}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5) else f"{value:.4g}"
    return str(value)
