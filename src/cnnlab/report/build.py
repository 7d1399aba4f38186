"""Build the comparison report from the MLflow store and the preprocessed test set alone."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from cnnlab.atomic import atomic_path, write_text
from cnnlab.data.preprocess import load_arrays, load_stats
from cnnlab.figures import overflow_pixels, plt
from cnnlab.report import network_figures, networks, registry
from cnnlab.report.context import ReportContext
from cnnlab.report.page import render_page
from cnnlab.report.runs import collect_runs, experiment_id
from cnnlab.report.sections.claims import claims_table
from cnnlab.report.summary import runs_table, summarize, to_markdown, variant_models
from cnnlab.study.studies import load_study
from cnnlab.tracking import store as tracking
from cnnlab.tracking.job_runs import JOB_TAG, close_duplicates, job_id, mark_closed, mark_open

log = logging.getLogger(__name__)


def save_png(fig, path: Path, whole: bool = False) -> Path:
    """The figure as a PNG; whole: the canvas grown to hold every artist (bbox_inches="tight")."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **({"bbox_inches": "tight"} if whole else {}))
    plt.close(fig)
    return path


def draw_figures(ctx) -> None:
    """Every registered figure into ctx.out; one that cannot be drawn becomes a placeholder saying why.
    A figure whose text would reach past its canvas is named in ctx.clipped (and saved whole)."""
    for fig in registry.figures(ctx.study):
        path = ctx.out / f"{fig.name}.png"
        try:
            drawn = fig.draw(ctx)
            clipped = overflow_pixels(drawn) > 1
            if clipped:
                ctx.clipped.append(fig.name)
            save_png(drawn, path, whole=clipped)
            continue
        except registry.Unavailable as e:
            ctx.notes[fig.name] = str(e)
        except Exception as e:  # one broken figure must not cost the whole report
            log.exception("figure %s failed", fig.name)
            detail = str(e).splitlines()[0][:150] if str(e) else ""
            ctx.notes[fig.name] = f"drawing it failed ({type(e).__name__}: {detail})"
        save_png(network_figures.placeholder_figure(fig.title, ctx.notes[fig.name]), path)


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
        models = variant_models(study, Path(conf_dir))
        table = summarize(study, records, models, networks.first_layer_counts(client, records))
        nets = networks.load_best(client, records, table)
        arrays = load_arrays(arrays_path)
        ctx = ReportContext(
            study=study, conf_dir=Path(conf_dir), out=out, client=client, records=records, table=table, nets=nets,
            x_test=torch.from_numpy(arrays["x_test"]), y_test=torch.from_numpy(arrays["y_test"]).long(), stats=stats,
        )
        draw_figures(ctx)
        html = render_page(ctx)
        claims = claims_table(ctx)

    write_text(out / "summary.csv", table.to_csv(index=False))
    write_text(out / "summary.md", to_markdown(table, f"Study '{study.name}': summary"))
    write_text(out / "runs.csv", runs_table(records).to_csv(index=False))
    write_text(out / "claims.csv", claims.to_csv(index=False))
    write_text(out / "report.html", html)
    run_id = _log_report_run(client, study.name, out, table)
    seconds = time.perf_counter() - t0
    log.info("report for study '%s' written to %s in %.1f s", study.name, out, seconds)
    return {
        "html": str(out / "report.html"),
        "summary": str(out / "summary.csv"),
        "markdown": str(out / "summary.md"),
        "claims": str(out / "claims.csv"),
        "figures": {fig.name: str(out / f"{fig.name}.png") for fig in registry.figures(study)},
        "unavailable": dict(ctx.notes),
        "clipped": list(ctx.clipped),
        "mlflow_run_id": run_id,
        "seconds": seconds,
    }


def _log_report_run(client, study_name: str, out: Path, table) -> str | None:
    # The files on disk are the report; the MLflow copy is a convenience, so its store gets a short
    # wait (s), and a run that could not be completed is marked FAILED rather than left RUNNING.
    def retry(fn, *args, **kwargs):
        return tracking.with_retry(fn, *args, wait_s=30, doing="logging the report", **kwargs)

    run_id = None
    try:
        exp_id = experiment_id(client, study_name)
        job = job_id(out)
        run = retry(client.create_run, exp_id, run_name="report",
                    tags={"cnnlab.kind": "report", "study": study_name, JOB_TAG: job})
        run_id = run.info.run_id
        mark_open(out, run_id, client.tracking_uri)  # a report killed from here on is found by the sweep
        close_duplicates(client, exp_id, job, keep={run_id})
        retry(client.log_metric, run_id, "variants_ok", float((table.status == "ok").sum()))
        for name in ("report.html", "summary.csv", "summary.md"):
            retry(client.log_artifact, run_id, str(out / name))
        retry(client.set_terminated, run_id, "FINISHED")
        mark_closed(out)
        return run_id
    except Exception as e:
        log.warning("could not log the report to MLflow: %s", tracking.first_line(e))
        if run_id is not None:
            try:
                retry(client.set_terminated, run_id, "FAILED")
                mark_closed(out)
            except Exception:
                log.warning("could not mark the report run %s as FAILED", run_id)
        return None
