"""The MLflow dashboard, opened in a real headless Chromium, shows a study's runs.

The first test builds a small SQLite tracking store the way the pipeline lays it out (one
experiment per study, runs named `<variant>-seed<seed>` and tagged with study, variant, seed and
model), serves it with `mlflow server` and reads the pages. The second runs the real smoke study
(Snakemake, Lightning, MLflow) on a tiny archive and opens it with `mlflow ui`, as the README says.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.browser import ARTIFACTS_DIR
from tests.helpers import SNAKEMAKE, copy_workflow
from tests.tiny_cifar import write_tiny_archive

pytestmark = pytest.mark.browser

VARIANTS = {"mlp_baseline": "mlp", "cnn_baseline": "cnn"}
SEEDS = [0, 1]
LOAD_TIMEOUT_S = 90  # first render of the single-page app is slow on 2 cores

# SEVERE console entries that say nothing about the dashboard; anything else fails.
# - Chromium asks for /favicon.ico on its own.
# - The UI probes the auth app's "current user" endpoint to learn whether login
#   is enabled; a server without `--app-name basic-auth` answers 404 by design.
# - The UI asks MLflow's AI assistant for its settings; on a host where no assistant provider can
#   be probed the server may answer 500. The assistant is no part of the runs the dashboard lists.
HARMLESS_CONSOLE_ERRORS = (
    "favicon.ico",
    "/ajax-api/2.0/mlflow/users/current - Failed to load resource: the server responded with a status of 404",
    "/ajax-api/3.0/mlflow/assistant/",
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


# The README's link into a study: MLflow 3.17 picks GenAI or model-training pages by a switch kept in
# the browser (default GenAI) and does not read the experiment's kind tag for it (mlflow #24498);
# this query parameter selects the model-training view.
TRAINING_VIEW = "workflowType=machine_learning"
# A finished workflow folder and its study, "FOLDER:STUDY", to open instead of a fresh smoke study,
# and a path to save the screenshot to: docs/dashboard.png is this test's screenshot of a finished
# quick study, made with
#   CNNLAB_DASHBOARD_STUDY=<folder>:quick CNNLAB_DASHBOARD_PNG=docs/dashboard.png \
#   pytest -o addopts= -m browser tests/test_dashboard_browser.py
# The image carries the variants it shows (its PNG "Variants" text), which tests/test_docs.py
# holds against the quick study's variant list.
STUDY_ENV = "CNNLAB_DASHBOARD_STUDY"
PNG_ENV = "CNNLAB_DASHBOARD_PNG"
SMOKE_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> tuple[Path, str]:
    """(workflow folder, study name) of a study whose training runs all finished."""
    if os.environ.get(STUDY_ENV):
        folder, study = os.environ[STUDY_ENV].rsplit(":", 1)
        return Path(folder), study
    tmp = tmp_path_factory.mktemp("smoke-study")
    wd = copy_workflow(tmp / "wf")
    md5 = write_tiny_archive(tmp / "tiny.tar.gz", 100)
    targets = [f"results/smoke/runs/{v}/seed0/result.json" for v in VARIANTS]
    cmd = [SNAKEMAKE, "-s", str(wd / "Snakefile"), "--directory", str(wd), "--cores", "2", "--config", "study=smoke",
           f"data_url=file://{tmp / 'tiny.tar.gz'}", f"data_md5={md5}", "train_records=500", "test_records=100",
           "val_size=50", "--", *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd, "smoke"


def _button(driver, text: str):
    from selenium.webdriver.common.by import By

    return next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == text)


def _close_assistant(driver) -> None:
    """The chat panel MLflow opens on the right takes a third of the page; close it as a user would."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        button.click()


def _show_column(driver, name: str) -> None:
    """Columns -> search -> tick the column, as the README tells users."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    _button(driver, "Columns").click()
    search = (By.CSS_SELECTOR, "input[placeholder='Search columns']")
    WebDriverWait(driver, 30).until(ec.element_to_be_clickable(search)).send_keys(name)
    node = (By.XPATH, "//div[@data-testid='column-selector-tree']//span[contains(@class, 'tree-node-content-wrapper')]"
                      f"[normalize-space(.)='{name}']")
    WebDriverWait(driver, 30).until(ec.element_to_be_clickable(node)).click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)


def _cells(driver, run_id: str) -> dict[str, str]:
    """The visible cells of a run's row in the runs table: {column id: text}."""
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, f".ag-row[row-id='{run_id}'] .ag-cell")
    return {c.get_attribute("col-id"): c.text.strip() for c in cells if c.is_displayed()}


def test_a_finished_study_opens_as_training_runs_with_accuracy_data_set_and_model(finished_study, chromium,
                                                                                    mlflow_server_factory):
    from mlflow import MlflowClient
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    wd, study = finished_study
    db = wd / "results" / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(study)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], "tags.`cnnlab.kind` = 'train'")}
    assert runs and all(r.info.status == "FINISHED" for r in runs.values())
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    url = mlflow_server_factory(f"sqlite:///{db}", wd / "results" / "mlartifacts", command="ui")
    ARTIFACTS_DIR.mkdir(exist_ok=True)

    chromium.set_window_size(1600, 1200)  # the 20 runs of the quick study in one screenshot
    by_accuracy = "orderByKey=metrics.%60test%2Facc%60&orderByAsc=false"
    chromium.get(f"{url}/#/experiments/{exp.experiment_id}/runs?{TRAINING_VIEW}&{by_accuracy}")
    _wait_for_text(chromium, list(runs), "dashboard-study")
    text = _page_text(chromium)
    assert "Model training" in text and "Sort: test/acc" in text
    assert "Detect Issues" not in text and "Traces\n0" not in text  # the GenAI overview and its pop-up
    _close_assistant(chromium)
    _show_column(chromium, "test/acc")

    test_acc = "metrics.`test/acc`"
    wanted = {run.info.run_id: f"{run.data.metrics['test/acc']}" for run in runs.values()}

    def table_complete(driver) -> bool:
        rows = {run_id: _cells(driver, run_id) for run_id in wanted}
        return all(
            cells.get(test_acc) == acc and "cifar10" in cells.get("attributes.`Dataset`", "")
            and "model" in cells.get("attributes.`Models`", "")
            for (run_id, acc), cells in zip(wanted.items(), rows.values(), strict=True)
        )

    try:
        WebDriverWait(chromium, LOAD_TIMEOUT_S, poll_frequency=1).until(table_complete)
    except TimeoutException:
        chromium.save_screenshot(str(ARTIFACTS_DIR / "dashboard-study-timeout.png"))
        got = {name: _cells(chromium, run.info.run_id) for name, run in runs.items()}
        pytest.fail(f"runs table incomplete: wanted test/acc {wanted}, got {got}")
    chromium.save_screenshot(str(ARTIFACTS_DIR / "dashboard-study.png"))
    assert _console_errors(chromium) == []
    if os.environ.get(PNG_ENV):
        save_with_variants(ARTIFACTS_DIR / "dashboard-study.png", Path(os.environ[PNG_ENV]),
                           sorted({r.data.tags["variant"] for r in runs.values()}))


def save_with_variants(screenshot: Path, dest: Path, variants: list[str]) -> None:
    """The screenshot, scaled to 1,200 pixels wide and stamped with the variants it shows."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Variants", ",".join(variants))
    with Image.open(screenshot) as im:
        im = im.convert("RGB")
        im = im.resize((1200, round(im.height * 1200 / im.width)), Image.LANCZOS)
        # A page of flat colours: a 256-colour palette keeps it sharp at a third of the bytes.
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dest, pnginfo=info, optimize=True)
