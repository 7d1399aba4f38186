"""The report's contents: sections and figures, each registered once, where it is written.

A section module registers its text with `@section` and its figures with `@figure`; the HTML page,
its numbering and the Snakemake rule's outputs are all made from this registry. The built-in
sections live in `cnnlab.report.sections`; a study adds its own modules with
`report: {modules: [my_figures]}`, so a new figure is one Python file and no edit anywhere else.

This module imports nothing heavy: the Snakefile reads the figure list from it at every start. So
the section modules, and the helpers they import, leave MLflow, Lightning and scipy to the functions
that use them (tests/test_report.py checks).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

BUILT_IN = "cnnlab.report.sections"


class Unavailable(Exception):
    """A figure or section that cannot be drawn from what the store holds; the message says why."""


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    order: float  # sections appear, and are numbered, by this
    render: Callable  # (ReportContext) -> list of HTML parts shown above the section's figures


@dataclass(frozen=True)
class Figure:
    name: str  # the file name (<name>.png) and the report rule's output name
    title: str
    section: str  # the key of the section it appears in
    caption: str  # what it shows: under the figure in the page, and a label in Snakemake's report
    category: str  # the group it appears under in `snakemake --report`
    draw: Callable  # (ReportContext) -> matplotlib Figure; raises Unavailable(reason)
    lead: bool = False  # shown at the top of its section, above the section's text


SECTIONS: dict[str, Section] = {}
FIGURES: dict[str, Figure] = {}


def section(key: str, title: str, order: float):
    def register(render: Callable) -> Callable:
        SECTIONS[key] = Section(key, title, order, render)
        return render

    return register


def figure(name: str, title: str, section: str, caption: str, category: str = "Comparison", lead: bool = False):
    def register(draw: Callable) -> Callable:
        if not name.isidentifier():
            raise ValueError(f"figure name '{name}' must be a Python identifier: it names a Snakemake output")
        FIGURES[name] = Figure(name, title, section, " ".join(caption.split()), category, draw, lead)
        return draw

    return register


def load(modules: Iterable[str] = ()) -> None:
    """Import the built-in section modules, then a study's own (`report.modules`)."""
    package = importlib.import_module(BUILT_IN)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{BUILT_IN}.{info.name}")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            from cnnlab.errors import UserError

            raise UserError(
                f"Cannot import the report module '{name}' listed in report.modules ({e}); check its name and "
                "that it is on the Python path."
            ) from None


def study_modules(study) -> list[str]:
    modules = study.report.get("modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        from cnnlab.errors import UserError

        raise UserError(f"Study '{study.name}': report.modules must be a list of Python module names.")
    return modules


def sections(study=None) -> list[Section]:
    load(study_modules(study) if study is not None else ())
    return sorted(SECTIONS.values(), key=lambda s: s.order)


def figures(study=None) -> list[Figure]:
    """Every figure, in page order (its section's order, then the order it was registered in)."""
    order = {s.key: i for i, s in enumerate(sections(study))}
    return sorted(FIGURES.values(), key=lambda f: order.get(f.section, len(order)))
