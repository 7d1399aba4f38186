"""report.html: one self-contained page (inline CSS, images as data URIs, no external requests)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; text-align: left; } td:first-child { text-align: left; }
td.text { text-align: left; }
tr.failed td { background: #fde8e8; } tr.missing td { background: #fff4d6; } tr.partial td { background: #fffbe6; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
.verdict { background: #eef6ff; border-left: 4px solid #4a90d9; padding: 0.6em 1em; }
"""
TEXT_CELL = '<td class="text">'


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def image(png: Path, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{escape(alt)}">'


def table(rows: list[dict], row_classes: list[str] | None = None, text_columns: tuple[str, ...] = ()) -> str:
    """rows of {column: cell text}; row_classes colour rows (failed, missing, partial)."""
    if not rows:
        return '<p class="note">(none)</p>'
    header = list(rows[0])
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(c)}</th>" for c in header) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{escape(row_classes[i])}"' if row_classes and row_classes[i] else ""
        cells = "".join((TEXT_CELL if c in text_columns else "<td>") + escape(str(row[c])) + "</td>" for c in header)
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def paragraph(text: str, css: str = "") -> str:
    opening = f'<p class="{escape(css)}">' if css else "<p>"
    return f"{opening}{escape(text)}</p>"


def details(summary: str, parts: list[str]) -> str:
    """Parts folded away behind a summary line the reader can open (the method, below the results)."""
    return f"<details><summary>{escape(summary)}</summary>\n" + "\n".join(parts) + "\n</details>"


def preformatted(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def page(title: str, sections: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
