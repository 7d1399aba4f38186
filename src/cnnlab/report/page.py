"""report.html: the registry's sections in order, numbered, each followed by its figures."""

from __future__ import annotations

from cnnlab.report import html
from cnnlab.report.registry import Unavailable, figures, sections


def figure_html(ctx, fig) -> str:
    parts = [html.image(ctx.out / f"{fig.name}.png", fig.title), html.paragraph(fig.caption, "note")]
    if fig.name in ctx.notes:
        parts.append(html.paragraph(f"Unavailable: {ctx.notes[fig.name]}.", "note"))
    return "\n".join(parts)


def render_page(ctx) -> str:
    by_section: dict[str, list] = {}
    for fig in figures(ctx.study):
        by_section.setdefault(fig.section, []).append(fig)
    parts = [html.paragraph(ctx.study.description) if ctx.study.description else ""]
    for number, sec in enumerate(sections(ctx.study), start=1):
        try:
            body = sec.render(ctx)
        except Unavailable as e:
            body = [html.paragraph(f"Unavailable: {e}.", "note")]
        placed = by_section.get(sec.key, [])
        body = [*(figure_html(ctx, f) for f in placed if f.lead), *body,
                *(figure_html(ctx, f) for f in placed if not f.lead)]
        parts.append(html.section(f"{number}. {sec.title}", *body))
    return html.page(f"Study '{ctx.study.name}': MLP vs CNN on CIFAR-10", parts)
