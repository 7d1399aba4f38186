"""The MLflow run of one training job: opened (or resumed), tagged, finished or marked failed.

This module owns the run's life; the store beneath it (cnnlab.tracking.store) connects, retries
and closes, and never calls back. Besides cnnlab's own tags, a run fills what MLflow's UI and API
read: its system tags (source, git commit, a note saying which variant it is), the data set as a
run input, system metrics while it trains (MLflow's own monitor, switched on through its fluent
run), and its best checkpoint as a logged model (cnnlab.tracking.model).
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from cnnlab.atomic import write_text
from cnnlab.errors import StoreError, UserError
from cnnlab.models import Network, family_of
from cnnlab.study.studies import load_study
from cnnlab.tracking import model as mlflow_model
from cnnlab.tracking import store
from cnnlab.tracking.callback import MlflowTracker
from cnnlab.tracking.job_runs import JOB_TAG, close_duplicates, job_id
from cnnlab.tracking.relocation import ARTIFACTS_FOLDER
from cnnlab.tracking.uri import resolve_uri
from cnnlab.training.provenance import device_name, git_state, versions
from cnnlab.training.rundir import RunDir

log = logging.getLogger(__name__)

# result.json key -> MLflow metric name of the final numbers
FINAL_METRICS = {
    "test_acc": "test/acc",
    "test_loss": "test/loss",
    "best_val_acc": "best_val_acc",
    "epochs": "epochs",
    "params": "params",
    "job_seconds": "job_seconds",
    "startup_seconds": "startup_seconds",
}


# The command that makes a training run: MLflow's Source column shows it.
SOURCE_NAME = "cnnlab.training.train"
# The split a run trains on: the context of its dataset input (MLflow's own autologgers say "train").
DATA_CONTEXT = "train"
MAX_PARAM_CHARS = 6000  # a config value longer than this is cut (MLflow's limit is 6000)
PARAMS_PER_BATCH = 100  # MLflow takes at most 100 parameters per batch


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow parameters: `trainer.max_epochs` -> "3"."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v)[:MAX_PARAM_CHARS]
    return out


@contextmanager
def tracking_uri_set(uri: str):
    """MLflow's fluent calls (the system-metrics run, model logging) read the process's tracking URI."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def variant_context(cfg, conf_dir: Path) -> dict:
    """What the run's variant adds over its baseline, the baseline's name, and whether the variant
    combines all of its family's optimizations, from the study file.

    Empty for a run by hand (study or variant 'adhoc') or a variant the study no longer has.
    """
    none = {"adds": "", "baseline": "", "combined": False}
    if cfg.run.study == "adhoc" or cfg.run.variant == "adhoc":
        return none
    try:
        study = load_study(cfg.run.study, conf_dir)
        variant = study.variant(cfg.run.variant)
    except UserError:
        return none
    return {"adds": variant.adds, "baseline": study.baseline_of(variant.name) or "", "combined": variant.combined}


def run_note(cfg, context: dict) -> str:
    """The run's description in MLflow (Markdown): which variant, what it adds, its study."""
    name = f"**{cfg.run.variant}**, seed {cfg.seed}, of study **{cfg.run.study}**"
    family = family_of(cfg.model)
    if not context["adds"]:
        return f"{name}: a {family} network trained by hand, not a variant of a study file."
    if context["baseline"] == cfg.run.variant:
        return f"{name}: the {family} baseline that the study's other {family} variants are compared with."
    against = f"its baseline **{context['baseline']}**" if context["baseline"] else "its family's baseline"
    if context["combined"]:
        return f"{name}: all of the study's {family} optimizations together ({context['adds']}), against {against}."
    return f"{name}: adds {context['adds']} over {against}."


def run_tags(cfg, net: Network, stats: dict, fp: str, context: dict) -> dict:
    commit, dirty = git_state()
    source = {
        "mlflow.source.name": SOURCE_NAME,
        "mlflow.source.type": "LOCAL",
        "mlflow.note.content": run_note(cfg, context),
    }
    if commit != "unknown":
        source["mlflow.source.git.commit"] = commit
    return {
        **source,
        "cnnlab.kind": "train",
        "study": cfg.run.study,
        "variant": cfg.run.variant,
        "seed": cfg.seed,
        "model": family_of(cfg.model),
        "architecture": net.architecture,
        "adds": context["adds"],
        "git_commit": commit,
        "git_dirty": dirty,
        "data_md5": stats.get("archive_md5", ""),
        "zscore_mean": json.dumps([round(v, 6) for v in stats["mean"]]),
        "zscore_std": json.dumps([round(v, 6) for v in stats["std"]]),
        "normalize": cfg.data.normalize,
        "config_fingerprint": fp,
        **versions(),
    }


def data_input(stats: dict, arrays: str | Path):
    """The data set as an MLflow run input: CIFAR-10 with its archive's MD5 as digest, where it came
    from, and the split the run trained on as its context."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    # Data prepared before the source was recorded name the prepared arrays instead.
    url = stats.get("source_url") or Path(arrays).resolve().as_uri()
    # As MLflow's HTTPDatasetSource and LocalArtifactDatasetSource write them.
    if url.startswith(("http://", "https://")):
        source_type, source = "http", {"url": url}
    else:
        source_type, source = "local", {"uri": url}
    schema = {"mlflow_tensorspec": {
        "features": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": [-1, 3, 32, 32]}}]),
        "targets": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]),
    }}
    md5 = stats.get("archive_md5") or "unknown"
    profile = {
        "archive_md5": md5,
        "num_rows": stats.get("n_train"),  # the training split; the others are held out from it
        "validation_rows": stats.get("n_val"),
        "test_rows": stats.get("n_test"),
        "split_seed": stats.get("split_seed"),
    }
    dataset = Dataset(
        name="cifar10",
        digest=md5[:8],  # as MLflow's own digests: 8 hex digits of an MD5
        source_type=source_type,
        source=json.dumps(source),
        schema=json.dumps(schema),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, DATA_CONTEXT)])


def input_example(arrays: str | Path, n: int) -> np.ndarray:
    """The first n test images, uint8 (n, 3, 32, 32): the logged model's input example.

    Read from the front of the uncompressed .npz member alone: loading all of x_test (30 MB for
    CIFAR-10) would take about 0.1 s of the job's end.
    """
    with zipfile.ZipFile(arrays) as z, z.open("x_test.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        if not fortran_order:  # as np.savez writes it
            count = min(n, shape[0])
            data = f.read(count * int(np.prod(shape[1:])) * dtype.itemsize)
            return np.frombuffer(data, dtype=dtype).reshape(count, *shape[1:]).copy()
    with np.load(arrays, allow_pickle=False) as z:
        return np.ascontiguousarray(z["x_test"][:n])


class TrainingRun:
    """One training job's MLflow run: its id is kept in the run folder, so a resumed job continues it.

    Every store call is retried for tracking.retry_s while the store fails; a run that cannot be
    finished is marked FAILED (or KILLED), so none stays RUNNING after its job ends.
    """

    def __init__(self, cfg, run_dir: RunDir, fp: str, tags: dict, resuming: bool, stats: dict):
        self.cfg, self.stats = cfg, stats
        self.uri = uri = resolve_uri(cfg.tracking.uri)
        self.wait_s, self.run_id, self.monitoring = cfg.tracking.retry_s, None, False
        self.client = store.connect(uri, cfg.tracking.timeout_s, self.wait_s)
        experiment = cfg.tracking.experiment or cfg.run.study
        db = store.sqlite_file(uri)
        local_root = db.parent / ARTIFACTS_FOLDER if db is not None else None
        self.experiment_id = self._store(
            "opening its experiment", store.ensure_experiment, self.client, experiment, local_root
        )
        state = run_dir.state()
        previous = state.get("mlflow_run_id") if state.get("tracking_uri") == uri else None
        try:
            self.last_step = self._open(run_dir, fp, previous if resuming else None, tags)
            if previous and not resuming and previous != self.run_id:
                # The run an unfinished job left, with no intact checkpoint to resume it from.
                reason = ("KILLED: no intact checkpoint was left to resume it; training started again as run "
                          f"{self.run_id}")
                store.end_run(self.client, previous, "KILLED", reason, wait_s=self.wait_s, only_if_running=True,
                              doing="closing the previous run")
            on_gpu = torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"
            device = device_name(torch.device("cuda" if on_gpu else "cpu"))
            store.set_tags(self.client, self.run_id, {"device": device}, wait_s=self.wait_s)
            # Logged again by a resumed job: the store keeps one input per (data set, run).
            inputs = [data_input(stats, cfg.data.arrays)]
            self._store("logging its data set", self._log_inputs, inputs)
            write_text(run_dir.config_file, OmegaConf.to_yaml(cfg))  # an artifact
            if self.last_step < 0:
                self._store("saving its config", self.client.log_artifact, self.run_id, str(run_dir.config_file))
            self.model_warm_up = mlflow_model.warm_up()
            self._start_system_metrics(cfg.tracking.system_metrics_interval_s)
        except BaseException as e:
            if self.run_id is not None:
                self.fail(e)
            raise

    def _open(self, run_dir: RunDir, fp: str, run_id: str | None, tags: dict) -> int:
        """Continue run_id when the store still has it, else start a new run; the last epoch it logged (-1: none).

        The run folder names the run as soon as it exists, before its parameters are logged, so a
        job that fails in between can still close it.
        """
        run = self._existing(run_id) if run_id else None
        if run is None:
            name = f"{self.cfg.run.variant}-seed{self.cfg.seed}"
            job = job_id(run_dir.path)
            tags = {k: str(v)[: store.MAX_TAG_CHARS] for k, v in {**tags, JOB_TAG: job}.items()}  # text only
            run = self._store("opening its run", self.client.create_run, self.experiment_id, run_name=name, tags=tags)
            # A create retried after a timeout the store did apply (ours, or MLflow's own HTTP retries)
            # made a twin that no folder names: closed now, by the job it belongs to. The run the folder
            # does name, left by an earlier attempt, is the caller's to close, saying why.
            named = run_dir.state().get("mlflow_run_id")
            close_duplicates(self.client, self.experiment_id, job, keep={run.info.run_id, named}, wait_s=self.wait_s)
        self.run_id = run.info.run_id
        run_dir.save_state(fingerprint=fp, mlflow_run_id=self.run_id, tracking_uri=self.uri,
                           experiment_id=self.experiment_id)  # fmt: skip
        if run.info.status != "RUNNING":
            self._store("opening its run", self.client.update_run, self.run_id, status="RUNNING")
        # All of them for a new run; those a failed first attempt did not get to log for a resumed one.
        params = flatten(OmegaConf.to_container(self.cfg, resolve=True))
        items = [Param(k, v) for k, v in params.items() if k not in run.data.params]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self._store("opening its run", self.client.log_batch, self.run_id, params=items[i : i + PARAMS_PER_BATCH])
        if run_id != self.run_id:
            return -1
        # train/loss: logged every epoch, whether or not it validated (trainer.check_val_every_n_epoch).
        history = self._store("opening its run", self.client.get_metric_history, self.run_id, "train/loss")
        return max((m.step for m in history), default=-1)

    def _existing(self, run_id: str):
        """The run to continue, or None when the store lost it (or it belongs to another experiment)."""
        try:
            run = self._store("opening its run", self.client.get_run, run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # a store that fails is not a store without the run: never start a second one
            log.warning("MLflow run %s is gone from the store; starting a new run", run_id)
            return None
        return run if run.info.experiment_id == self.experiment_id else None

    def _start_system_metrics(self, interval_s: float) -> None:
        """MLflow's system-metrics monitor, through its public switch: the fluent run, resumed on this run.

        A resumed run continues the metrics' steps where the killed job left them.
        """
        if interval_s <= 0:
            return
        mlflow.set_system_metrics_sampling_interval(interval_s)
        with tracking_uri_set(self.uri):
            self._store("starting its system metrics", mlflow.start_run, run_id=self.run_id, log_system_metrics=True)
        self.monitoring = True

    def _stop_system_metrics(self) -> None:
        """End the fluent run, which stops MLflow's monitor and writes what it has published.

        Ended as RUNNING: the run's own end (store.end_run) comes after its model is logged, and an
        active fluent run would make MLflow link every metric of step 0 to that model.
        """
        if not self.monitoring:
            return
        self.monitoring = False
        try:
            with tracking_uri_set(self.uri):
                mlflow.end_run("RUNNING")
        except Exception as e:  # the store may be what failed: the run's own end matters more
            log.warning("could not stop the system metrics of MLflow run %s: %s", self.run_id, store.first_line(e))

    def _store(self, doing: str, fn, *args, **kwargs):
        return store.with_retry(fn, *args, wait_s=self.wait_s, doing=doing, uri=self.uri, **kwargs)

    def _log_inputs(self, inputs) -> None:
        # MLflow looks the data set up and then inserts it: jobs of one study starting together can
        # both insert it, and the second fails on the store's UNIQUE constraint. Its next try finds
        # the row the first one wrote and only links it to this run.
        for attempt in range(3):
            try:
                return self.client.log_inputs(self.run_id, datasets=inputs)
            except MlflowException as e:
                if "UNIQUE constraint failed: datasets" not in str(e) or attempt == 2:
                    raise

    def callback(self) -> MlflowTracker:
        return MlflowTracker(self.client, self.run_id, self.last_step, self.wait_s)

    def log_new_params(self, params: dict[str, str]) -> None:
        """Log the params the run does not have yet: a resumed run keeps those of its first start."""
        from mlflow.entities import Param

        have = self._store("reading its params", self.client.get_run, self.run_id).data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in have]
        if new:
            self._store("logging its params", self.client.log_batch, self.run_id, params=new)

    def log_parameter_count(self, n_params: int) -> None:
        if self.last_step < 0:
            self._store("logging the parameter count", self.client.log_metric, self.run_id, "params", n_params, step=0)

    def _logged_model_id(self) -> str | None:
        """The id of this run's finished logged model, if a job killed after logging it left one.

        A model a killed job left half-logged is deleted, so the run shows one model.
        """
        found = self.client.search_logged_models(
            experiment_ids=[self.experiment_id],
            filter_string=f"source_run_id = '{self.run_id}' AND name = '{mlflow_model.MODEL_NAME}'",
        )
        ready = [m.model_id for m in found if str(m.status) == "READY"]
        for model in found:
            if model.model_id not in ready:
                self.client.delete_logged_model(model.model_id)
        return ready[0] if ready else None

    def log_model(self, checkpoint: Path) -> str:
        """The best checkpoint as the run's MLflow model (once, also across a resumed job); its id."""
        model_id = self._logged_model_id()
        if model_id is not None:
            return model_id
        start = time.perf_counter()
        self.model_warm_up.join()
        example = input_example(self.cfg.data.arrays, mlflow_model.EXAMPLE_IMAGES)
        with tracking_uri_set(self.uri):
            info = mlflow_model.log_best_model(
                self.client, self.client.get_run(self.run_id), checkpoint, self.cfg, self.stats, example
            )
        log.info("logged the best checkpoint as MLflow model %s (%.2f s)", info.model_id, time.perf_counter() - start)
        return info.model_id

    def finish(self, run_dir: RunDir, result: dict) -> None:
        """Log the model, the final numbers and the artifacts, then mark the run FINISHED.

        The caller marks it FAILED when this raises."""
        self._stop_system_metrics()
        best = run_dir.checkpoints / "best.ckpt"
        model_id = self.log_model(best) if best.is_file() else None
        now = int(time.time() * 1000)
        # Linked to the logged model, so its page shows the accuracy it reached.
        metrics = [Metric(name, float(result[key]), now, 0, model_id=model_id) for key, name in FINAL_METRICS.items()
                   if result.get(key) is not None]
        self._store("logging the final metrics", self.client.log_batch, self.run_id, metrics=metrics)
        for f in sorted(run_dir.artifacts.iterdir()):
            self._store(f"saving {f.name}", self.client.log_artifact, self.run_id, str(f))
        if best.is_file():
            self._store("saving checkpoints/best.ckpt", self.client.log_artifact, self.run_id, str(best), "checkpoints")
        store.end_run(self.client, self.run_id, "FINISHED", wait_s=self.wait_s)

    def fail(self, error: BaseException) -> None:
        """Mark the run KILLED (interrupted, terminated) or FAILED, with the reason in its `error` tag."""
        self._stop_system_metrics()
        # SystemExit: Lightning's answer to SIGTERM (a scheduler's preemption, `kill`)
        status = "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"
        # A store that just failed for retry_s gets a shorter second chance (s).
        wait_s = min(self.wait_s, 30) if isinstance(error, StoreError) else self.wait_s
        try:
            store.end_run(self.client, self.run_id, status, f"{type(error).__name__}: {store.first_line(error)}",
                          wait_s=wait_s)
        except Exception as e:  # the store itself may be what failed; the original error matters more
            log.warning("could not mark MLflow run %s as %s: %s", self.run_id, status, store.first_line(e))
