"""Build the comparison report from the MLflow store and the preprocessed test set alone."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from cnnlab import tracking
from cnnlab.atomic import atomic_path, write_text
from cnnlab.datamodule import load_stats
from cnnlab.figures import plt
from cnnlab.preprocess import load_arrays
from cnnlab.report import network_figures, networks, sensitivity, study_figures
from cnnlab.report.page import render_page
from cnnlab.report.runs import collect_runs, experiment_id
from cnnlab.report.summary import runs_table, summarize, to_markdown
from cnnlab.study import load_study

log = logging.getLogger(__name__)

FIGURES = (
    "ablation",
    "learning_curves",
    "params_vs_accuracy",
    "sensitivity",
    "confusion",
    "filters",
    "activations",
    "convolutions",
)
DEFAULT_SENSITIVITY_IMAGES = 2000


def save_png(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


class FigureWriter:
    """Draws each figure into out_dir; one that cannot be drawn becomes a placeholder saying why."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.notes: dict[str, str] = {}  # figure -> why it is unavailable

    def __call__(self, name: str, title: str, draw, unavailable: str | None = None) -> Path:
        path = self.out_dir / f"{name}.png"
        if unavailable is None:
            try:
                return save_png(draw(), path)
            except Exception as e:  # one broken figure must not cost the whole report
                log.exception("figure %s failed", name)
                unavailable = (
                    f"drawing it failed ({type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''})"
                )
        self.notes[name] = unavailable
        return save_png(network_figures.placeholder_figure(title, unavailable), path)


@contextmanager
def no_download_progress_bars():
    """MLflow draws a progress bar per artifact download: dozens of lines in the job log."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _sample_size(study) -> int:
    return int(study.report.get("sensitivity_images", DEFAULT_SENSITIVITY_IMAGES))


def build_report(tracking_uri: str, study_name: str, conf_dir, arrays_path, out_dir) -> dict:
    """Write report.html, summary.csv/.md and the figures into out_dir; log them as a 'report' run."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = load_study(study_name, Path(conf_dir))
    stats = load_stats(arrays_path)
    client = tracking.connect(tracking_uri)
    with tracking.quiet_mlflow(), no_download_progress_bars():
        records = collect_runs(client, study)
        table = summarize(study, records, networks.first_layer_counts(client, records))
        nets = networks.load_best(client, records, table)
        arrays = load_arrays(arrays_path)
        x_test, y_test = torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"]).long()
        draw = FigureWriter(out)
        context = _draw_figures(draw, client, study, records, table, nets, x_test, y_test, stats)

    write_text(out / "summary.csv", table.to_csv(index=False))
    write_text(out / "summary.md", to_markdown(table, f"Study '{study.name}': summary"))
    write_text(out / "runs.csv", runs_table(records).to_csv(index=False))
    html = render_page(study, Path(conf_dir), records, table, nets, context, draw.notes, out)
    write_text(out / "report.html", html)
    run_id = _log_report_run(client, study.name, out, table)
    seconds = time.perf_counter() - t0
    log.info("report for study '%s' written to %s in %.1f s", study.name, out, seconds)
    return {
        "html": str(out / "report.html"),
        "summary": str(out / "summary.csv"),
        "markdown": str(out / "summary.md"),
        "figures": {name: str(out / f"{name}.png") for name in FIGURES},
        "unavailable": dict(draw.notes),
        "verdict": context.get("verdict", ""),
        "mlflow_run_id": run_id,
        "seconds": seconds,
    }


def _draw_figures(draw, client, study, records, table, nets, x_test, y_test, stats) -> dict:
    ctx: dict = {}
    ctx["ablation"] = ablation = study_figures.ablation_table(table, records)
    no_baseline = None if len(ablation) else "no family has both a baseline and another finished variant"
    draw("ablation", "Ablation", lambda: study_figures.ablation_figure(ablation), no_baseline)
    no_curves = None if any(r.history for r in records) else "no run logged per-epoch metrics"
    draw("learning_curves", "Learning curves", lambda: study_figures.learning_curves_figure(table, records), no_curves)
    no_params = None if (table.n_runs > 0).any() else "no run finished"
    draw("params_vs_accuracy", "Parameters vs accuracy", lambda: study_figures.params_figure(table), no_params)

    missing_nets = [k.upper() for k in ("mlp", "cnn") if k not in nets]
    why = (
        f"no checkpoint of a finished {' and '.join(missing_nets)} run could be loaded from MLflow"
        if missing_nets
        else None
    )
    n = min(_sample_size(study), len(y_test))
    tables = {}

    def sensitivity_fig():
        for kind, trained in nets.items():
            tables[kind] = sensitivity.evaluate(trained, x_test[:n], y_test[:n], stats)
        return study_figures.sensitivity_figure(tables, {k: f"{k.upper()} {t.label}" for k, t in nets.items()})

    draw(
        "sensitivity",
        "Sensitivity to position and scale",
        sensitivity_fig,
        "no trained MLP or CNN could be loaded" if not nets else None,
    )
    ctx["sensitivity"], ctx["sensitivity_images"] = tables, n
    ctx["verdict"] = sensitivity.verdict(tables) if tables else f"Not measured: {why or 'no network'}."

    def confusion_fig():
        cms = {
            k: (networks.confusion_matrix(client, t, x_test, y_test.numpy(), stats), f"{k.upper()} {t.label}")
            for k, t in nets.items()
        }
        return network_figures.confusion_pair_figure(cms, stats["classes"])

    draw("confusion", "Confusion matrices", confusion_fig, None if nets else why)
    draw("filters", "Learned filters", lambda: network_figures.filters_figure(nets), None if nets else why)
    image_index = 0
    label = stats["classes"][int(y_test[image_index])] if len(y_test) else ""
    no_cnn = None if "cnn" in nets else "no checkpoint of a finished CNN run could be loaded from MLflow"
    draw(
        "activations",
        "Activation maps",
        lambda: network_figures.activations_figure(nets["cnn"], x_test[:1], stats, label),
        no_cnn,
    )
    no_image = None if len(y_test) else "the test set is empty"
    draw(
        "convolutions",
        "Filters and convolutions",
        lambda: network_figures.convolutions_figure(np.asarray(x_test[image_index]), label),
        no_image,
    )
    return ctx


def _log_report_run(client, study_name: str, out: Path, table) -> str | None:
    try:
        run = client.create_run(
            experiment_id(client, study_name), run_name="report", tags={"cnnlab.kind": "report", "study": study_name}
        )
        run_id = run.info.run_id
        client.log_metric(run_id, "variants_ok", float((table.status == "ok").sum()))
        for name in ("report.html", "summary.csv", "summary.md"):
            client.log_artifact(run_id, str(out / name))
        client.set_terminated(run_id, "FINISHED")
        return run_id
    except Exception as e:  # the files on disk are the report; the MLflow copy is a convenience
        log.warning("could not log the report to MLflow: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None
