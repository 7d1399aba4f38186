"""The MLflow dashboard, opened in a real headless Chromium, shows a study's runs.

Builds a small SQLite tracking store the way the pipeline lays it out (one
experiment per study, runs named `<variant>-seed<seed>` and tagged with study,
variant, seed and model), serves it with `mlflow server` and reads the pages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import ARTIFACTS_DIR

pytestmark = pytest.mark.browser

VARIANTS = {"mlp_baseline": "mlp", "cnn_baseline": "cnn"}
SEEDS = [0, 1]
LOAD_TIMEOUT_S = 90  # first render of the single-page app is slow on 2 cores

# SEVERE console entries that say nothing about the dashboard; anything else fails.
# - Chromium asks for /favicon.ico on its own.
# - The UI probes the auth app's "current user" endpoint to learn whether login
#   is enabled; a server without `--app-name basic-auth` answers 404 by design.
HARMLESS_CONSOLE_ERRORS = (
    "favicon.ico",
    "/ajax-api/2.0/mlflow/users/current - Failed to load resource: the server responded with a status of 404",
)


def _make_store(db: Path, artifacts: Path) -> tuple[str, dict[str, str]]:
    """Create experiment "quick" with finished runs; return (experiment id, {run name: run id})."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp_id = client.create_experiment("quick", artifact_location=str(artifacts))
    runs = {}
    for variant, model in VARIANTS.items():
        for seed in SEEDS:
            name = f"{variant}-seed{seed}"
            tags = {"study": "quick", "variant": variant, "seed": str(seed), "model": model}
            run = client.create_run(exp_id, run_name=name, tags=tags)
            for epoch in range(3):
                client.log_metric(run.info.run_id, "val/acc", 0.3 + 0.1 * epoch + 0.01 * seed, step=epoch)
                client.log_metric(run.info.run_id, "train/loss", 2.0 - 0.3 * epoch, step=epoch)
            client.set_terminated(run.info.run_id)
            runs[name] = run.info.run_id
    return exp_id, runs


def _page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _wait_for_text(driver, needles: list[str], what: str) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, LOAD_TIMEOUT_S, poll_frequency=0.5).until(
            lambda d: all(n in _page_text(d) for n in needles)
        )
    except TimeoutException:
        missing = [n for n in needles if n not in _page_text(driver)]
        driver.save_screenshot(str(ARTIFACTS_DIR / f"{what}-timeout.png"))
        pytest.fail(f"{what}: {missing} not shown after {LOAD_TIMEOUT_S} s at {driver.current_url}")


def _console_errors(driver) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not any(h in entry["message"] for h in HARMLESS_CONSOLE_ERRORS)
    ]


def test_dashboard_lists_every_run(tmp_path, chromium, mlflow_server_factory):
    db, artifacts = tmp_path / "mlflow.db", tmp_path / "artifacts"
    exp_id, runs = _make_store(db, artifacts)
    url = mlflow_server_factory(f"sqlite:///{db}", artifacts)
    ARTIFACTS_DIR.mkdir(exist_ok=True)

    # The experiment's own route opens MLflow 3's GenAI overview; the runs
    # table lives under /runs.
    chromium.get(f"{url}/#/experiments/{exp_id}/runs")
    _wait_for_text(chromium, list(runs), "dashboard-runs")
    chromium.save_screenshot(str(ARTIFACTS_DIR / "dashboard-runs.png"))
    assert f"{len(runs)} matching runs" in _page_text(chromium)
    assert _console_errors(chromium) == []

    # One run's page shows its logged metrics.
    name, run_id = next(iter(runs.items()))
    chromium.get(f"{url}/#/experiments/{exp_id}/runs/{run_id}")
    _wait_for_text(chromium, [name, "val/acc", "train/loss"], "dashboard-run")
    chromium.save_screenshot(str(ARTIFACTS_DIR / "dashboard-run.png"))
    assert _console_errors(chromium) == []
