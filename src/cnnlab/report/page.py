"""The report's text: the lecture's questions, each answered with the study's numbers and figures."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from cnnlab import filters
from cnnlab.report import html
from cnnlab.report.networks import first_layer_params
from cnnlab.report.runs import FINISHED, RunRecord
from cnnlab.report.summary import display_rows

PROVENANCE_TAGS = ("torch_version", "lightning_version", "cnnlab_version", "python_version")


def _figure(out: Path, name: str, alt: str, notes: dict) -> str:
    note = html.paragraph(f"Unavailable: {notes[name]}.", "note") if name in notes else ""
    return html.image(out / f"{name}.png", alt) + note


def summary_section(table: pd.DataFrame, records: list[RunRecord]) -> str:
    classes = [s if s != "ok" else "" for s in table.status]
    problems = [
        {"variant": r.variant, "seed": r.seed, "state": r.state, "error": r.error}
        for r in records
        if r.state != FINISHED
    ]
    parts = [
        html.table(display_rows(table), classes, text_columns=("variant", "model", "adds", "status")),
        html.paragraph(
            "Test accuracy: mean ± sample standard deviation (ddof=1) over the finished seeds; 0 when one seed "
            "finished. Training time: the job's wall time (training and testing); images/s: the last epoch's "
            "training throughput.",
            "note",
        ),
    ]
    if problems:
        parts += [
            "<h3>Runs that did not finish</h3>",
            html.table(problems, [p["state"] for p in problems], ("variant", "state", "error")),
        ]
    return html.section("1. Summary", *parts)


def ablation_section(out: Path, context: dict, notes: dict) -> str:
    ab = context["ablation"]
    rows = [
        {
            "model": r.model,
            "variant": r.variant,
            "adds": r.adds,
            "change (points)": ""
            if math.isnan(r.delta_mean)
            else f"{100 * r.delta_mean:+.2f} ± {100 * r.delta_std:.2f}",
            "seed pairs": r.n_pairs,
        }
        for r in ab.itertuples()
    ]
    return html.section(
        "2. Ablation: what each optimization adds",
        html.paragraph(
            "Change in test accuracy over the family's baseline, paired by seed (each seed compared with the "
            "baseline's same seed); error bars: sample std of the per-seed changes. Red: all together.",
            "note",
        ),
        _figure(out, "ablation", "ablation", notes),
        html.table(rows, text_columns=("model", "variant", "adds")),
    )


def dimensionality_section(out: Path, table: pd.DataFrame, nets: dict, notes: dict) -> str:
    rows = [
        {
            "variant": r.variant,
            "model": r.model,
            "parameters": f"{int(r.params):,}",
            "first layer": f"{int(r.first_layer_params):,}",
        }
        for r in table.itertuples()
        if not pd.isna(r.params) and not pd.isna(r.first_layer_params)
    ]
    text = (
        "A fully connected first layer sees every pixel of every channel: 32 x 32 x 3 = 3,072 inputs per unit, "
        "so its weights grow with the image size. A convolution's first layer has k x k x 3 weights per filter, "
        "shared over all positions, whatever the image size."
    )
    best = [f"{k.upper()} {t.label}: first layer {first_layer_params(t.net):,} parameters" for k, t in nets.items()]
    return html.section(
        "4. Problema 1: high dimensionality",
        html.paragraph(text),
        html.paragraph("; ".join(best) + "." if best else "", "note"),
        _figure(out, "params_vs_accuracy", "parameters vs accuracy", notes),
        html.table(rows, text_columns=("variant", "model")),
    )


def sensitivity_section(out: Path, context: dict, notes: dict) -> str:
    rows = []
    for kind, t in context["sensitivity"].items():
        for label, sel in (
            ("shift 4 px (zeros)", (t["transform"] == "shift") & (t["mode"] == "zeros") & (t.amount == 4)),
            ("shift 8 px (zeros)", (t["transform"] == "shift") & (t["mode"] == "zeros") & (t.amount == 8)),
            ("scale 0.75", (t["transform"] == "scale") & (t.amount == 0.75)),
            ("scale 1.25", (t["transform"] == "scale") & (t.amount == 1.25)),
        ):
            r = t[sel].iloc[0]
            rows.append(
                {
                    "network": kind.upper(),
                    "transform": label,
                    "accuracy %": f"{100 * r.acc:.2f}",
                    "drop (points)": f"{100 * r['drop']:.2f}",
                }
            )
    return html.section(
        "5. Problema 2: sensitivity to position and scale",
        html.paragraph(
            f"Best MLP and best CNN (best seed) on the first {context['sensitivity_images']} test images, "
            "each shifted by 0-8 pixels up, down, left or right (the border filled with zeros, the edge pixel, "
            "or the opposite edge), or rescaled about its centre (black border).",
            "note",
        ),
        html.paragraph(context["verdict"], "verdict"),
        _figure(out, "sensitivity", "sensitivity", notes),
        html.table(rows, text_columns=("network", "transform")),
    )


def filters_section(out: Path, notes: dict) -> str:
    shapes = [
        {
            "input": "32x32",
            "kernel": k,
            "stride": s,
            "padding": p,
            "output": "x".join(map(str, filters.output_shape((32, 32), k, s, p))),
        }
        for k, s, p in ((3, 1, 0), (3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 0), (2, 2, 0))
    ]
    ma = filters.moving_average([5, 7, 3, 6, 5, 4, 6, 5], [1 / 3] * 3)
    return html.section(
        "8. Filtros e convoluções",
        html.paragraph(
            f"Moving average of [5, 7, 3, 6, 5, 4, 6, 5] with [1/3, 1/3, 1/3]: [{', '.join(f'{v:.2f}' for v in ma)}]."
        ),
        html.paragraph(
            "torch's conv2d computes a cross-correlation; the kernels below are flipped first, so this is the true "
            "convolution (for the symmetric mean and sharpen kernels the two agree). Output size per axis: "
            "floor((in + 2 x padding - kernel) / stride) + 1.",
            "note",
        ),
        html.table(shapes),
        _figure(out, "convolutions", "convolutions", notes),
    )


def provenance_section(study, conf_dir: Path, records: list[RunRecord]) -> str:
    ran = [r for r in records if r.run_id]
    count = lambda key: Counter(r.tags.get(key, "?") for r in ran)  # noqa: E731
    commits = Counter(f"{r.tags.get('git_commit', '?')[:12]} (dirty: {r.tags.get('git_dirty', '?')})" for r in ran)
    rows = [{"what": "commit", "value": ", ".join(f"{k} x{n}" for k, n in commits.items())}]
    for key in ("data_md5", "device", *PROVENANCE_TAGS):
        rows.append({"what": key, "value": ", ".join(f"{k} x{n}" for k, n in count(key).items())})
    seconds = sum(
        r.metric("job_seconds") for r in ran if r.state == FINISHED and not math.isnan(r.metric("job_seconds"))
    )
    finished = sum(r.state == FINISHED for r in ran)
    rows.append(
        {
            "what": "total training time",
            "value": f"{seconds / 3600:.2f} h ({seconds:,.0f} s) over {finished} finished runs",
        }
    )
    rows.append({"what": "report built", "value": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    study_file = Path(conf_dir) / "study" / f"{study.name}.yaml"
    text = study_file.read_text() if study_file.is_file() else "(study file not found)"
    return html.section(
        "9. How it was made",
        html.paragraph("x N: how many runs share the value."),
        html.table(rows, text_columns=("what", "value")),
        f"<h3>Study file {html.escape(str(study_file.name))}</h3>",
        html.preformatted(text),
    )


def render_page(study, conf_dir: Path, records, table, nets: dict, context: dict, notes: dict, out: Path) -> str:
    sections = [
        html.paragraph(study.description) if study.description else "",
        summary_section(table, records),
        ablation_section(out, context, notes),
        html.section(
            "3. Learning curves",
            html.paragraph("Validation accuracy and loss per epoch: mean over seeds, band from min to max.", "note"),
            _figure(out, "learning_curves", "learning curves", notes),
        ),
        dimensionality_section(out, table, nets, notes),
        sensitivity_section(out, context, notes),
        html.section("6. Confusion matrices", _figure(out, "confusion", "confusion matrices", notes)),
        html.section(
            "7. Learned filters",
            html.paragraph(
                "The MLP's first-layer weights, one row per unit, reshaped to the 32x32x3 image they are matched "
                "against (a template); the CNN's first-layer kernels; then one test image through the CNN's "
                "convolutions.",
                "note",
            ),
            _figure(out, "filters", "learned filters", notes),
            _figure(out, "activations", "activation maps", notes),
        ),
        filters_section(out, notes),
        provenance_section(study, conf_dir, records),
    ]
    return html.page(f"Study '{study.name}': MLP vs CNN on CIFAR-10", sections)
