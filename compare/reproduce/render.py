"""report.html: one self-contained page (inline CSS, figures as base64 PNG, no script, no external
reference), so it opens offline and can be mailed as one file.

Everything drawn from data — token texts above all (`<`, `&`, `$`, emoji, CJK) — goes through
`html.escape`: tokens are data, never markup (house rule 19).
"""
from __future__ import annotations

import base64
import html
from typing import Any, Mapping

import pandas as pd

from .report import Report, Section, format_value

CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .3em .5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.value { white-space: pre-wrap; font-family: "DejaVu Sans Mono", monospace; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
.banner { background: #fde2e1; border: 2px solid #c0392b; padding: .6em 1em; font-size: 1.05em; }
.warning { background: #fff4d6; border: 1px solid #e0c060; padding: .6em; }
.sure { color: #666; font-size: .85em; }
.where { color: #555; font-style: italic; }
"""


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def page(report: Report, pngs: Mapping[str, Mapping[str, bytes]]) -> str:
    """The whole report as one HTML string; pngs: section key → figure name → PNG bytes."""
    header = report.header
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(header['title'])}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(header['title'])}</h1>", _banner(header.get("banner", [])), _what_ran(header),
             f'<p class="warning" id="weights-warning">{escape(header["statement"])}</p>',
             _header_table(header), _contents(report.sections)]
    parts += [_section(s, pngs.get(s.key, {})) for s in report.sections]
    parts.append("</body></html>")
    return "\n".join(parts)


def _banner(lines: list[str]) -> str:
    """The first thing on the page where the weights are not the thesis's or do not model English."""
    if not lines:
        return ""
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<div class="banner" id="banner"><strong>Read this first.</strong><ul>{items}</ul></div>'


WHAT_RAN = (("role", "role"), ("source", "source"), ("parameters", "parameters"),
            ("weights_sha256", "weights (SHA-256, first 12 hex)"), ("thesis_checkpoint", "the thesis's checkpoint?"),
            ("language_check", "language check"))


def _what_ran(header: Mapping[str, Any]) -> str:
    """One row per model: which checkpoint ran, and whether it is the thesis's and models English."""
    head = "".join(f"<th>{escape(label)}</th>" for _, label in WHAT_RAN)
    body = "".join("<tr>" + "".join(f"<td>{escape(format_value(m.get(key)))}</td>" for key, _ in WHAT_RAN) + "</tr>"
                   for m in header.get("models", []))
    return f'<h2 id="what-ran">What ran</h2><table id="models">{"<tr>" + head + "</tr>"}{body}</table>'


def _header_table(header: Mapping[str, Any]) -> str:
    rows = [("run", header["run"]), ("seed", header["seed"]), ("plan", header["plan"])]
    rows += [(f"model: {m['role']}", m) for m in header["models"]]
    rows += [("versions", header["versions"])]
    cells = "".join(f"<tr><th>{escape(k)}</th><td class=\"value\">{escape(_plain(v))}</td></tr>" for k, v in rows)
    return f'<table id="header">{cells}</table>'


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return format_value(value)


def _contents(sections: list[Section]) -> str:
    items = "".join(f'<li><a href="#section-{s.number}">{s.number}. {escape(s.title)}</a></li>' for s in sections)
    return f"<nav><ol>{items}</ol></nav>"


def _section(s: Section, pngs: Mapping[str, bytes]) -> str:
    out = [f'<section id="section-{s.number}" data-key="{escape(s.key)}">',
           f"<h2>{s.number}. {escape(s.title)}</h2>", f'<p class="where">Thesis: {escape(s.where)}</p>']
    if s.rows:
        out.append("<table class=\"claims\"><tr><th>what</th><th>thesis says</th><th>measured here</th>"
                   + ("<th>check</th>" if any(r.verdict for r in s.rows) else "") + "</tr>")
        for r in s.rows:
            measured = "<br>".join(f'<span title="{escape(n.definition)}">{escape(n.label)}</span>: {escape(n.text())} '
                                   f'<span class="sure">({escape(n.sureness())})</span>'
                                   for n in r.measured) or "—"
            verdict = f"<td>{escape(r.verdict)}</td>" if any(x.verdict for x in s.rows) else ""
            out.append(f"<tr><td>{escape(r.quantity)}</td><td>{escape(r.thesis)}</td>"
                       f'<td class="value">{measured}</td>{verdict}</tr>')
        out.append("</table>")
    out += [f"<p>{escape(note)}</p>" for note in s.notes]
    for name, png in pngs.items():
        data = base64.b64encode(png).decode("ascii")
        out.append(f'<figure data-name="{escape(name)}"><img alt="{escape(s.captions.get(name, name))}" '
                   f'src="data:image/png;base64,{data}"><figcaption>{escape(s.captions.get(name, ""))}</figcaption>'
                   "</figure>")
    for name, table in s.tables.items():
        title = s.table_definitions.get(name, name)
        out.append(f"<h3>{escape(title[:1].upper() + title[1:])}</h3>")
        out.append(frame_table(table, name))
    out.append("</section>")
    return "\n".join(out)


def frame_table(frame: pd.DataFrame, name: str) -> str:
    """A DataFrame as an HTML table, every cell escaped."""
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(format_value(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table class="data" data-name="{escape(name)}"><tr>{head}</tr>{body}</table>'
