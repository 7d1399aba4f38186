"""Train one run: `python -m cnnlab.train study=quick variant=cnn_zscore seed=0 run.dir=results/...`.

Every other argument is a Hydra override (`trainer.max_epochs=3`, `model=cnn`, ...); `--config-dir`
points at another `conf/`. `train(cfg)` is the function tests and other code call directly.
A job that is started again after an interruption resumes from its last checkpoint and continues
the same MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cnnlab import figures, tracking
from cnnlab.atomic import write_text
from cnnlab.checkpoint import SafeCheckpointIO
from cnnlab.config import fingerprint
from cnnlab.datamodule import ArrayDataModule
from cnnlab.errors import UserError, storage_error_message
from cnnlab.gpu import pin_to_free_gpu
from cnnlab.models import build_network, count_parameters, first_layer_weight
from cnnlab.module import Classifier, NonFiniteLossError
from cnnlab.provenance import device_name, git_state, versions
from cnnlab.study import CONF_DIR, compose_config, load_study

log = logging.getLogger("cnnlab.train")


class NoProfiler(PassThroughProfiler):
    """Lightning's default no-op profiler without its cost.

    The default still opens a generator context manager around every hook call, ~50 of them per
    training_step call: ~80 us, which shows against a small network's few-millisecond step on a
    CPU. A shared `nullcontext` does nothing at a fraction of that.
    """

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str):
        return self._nothing

class RunDir:
    """The files of one run: checkpoints, the resume state, the final result (Snakemake's output)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.state_file = self.path / "state.json"
        self.result_file = self.path / "result.json"

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, **state) -> None:
        write_text(self.state_file, json.dumps(state, indent=2) + "\n")

    def resume_checkpoint(self, fp: str) -> Path | None:
        last = self.checkpoints / "last.ckpt"
        if not last.is_file():
            return None
        if self.state().get("fingerprint") == fp:
            return last
        # Written under another config: keep it aside (nothing is lost) and start afresh.
        stale = self.path / f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        self.checkpoints.rename(stale)
        log.warning("checkpoints were made with another config; moved to %s", stale)
        return None


def _precision(cfg, on_gpu: bool) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def _channels_last(cfg, on_gpu: bool) -> bool:
    if cfg.trainer.channels_last != "auto":
        return cfg.trainer.channels_last == "true"
    return on_gpu and cfg.model.family != "mlp"


def train(cfg: DictConfig) -> dict:
    """Train, validate each epoch, test the best checkpoint; return the final metrics."""
    t_start = time.perf_counter()
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    gpu_lock = pin_to_free_gpu() if cfg.trainer.accelerator in ("auto", "gpu", "cuda") else None  # noqa: F841
    on_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    run_dir = RunDir(cfg.run.dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(cfg)
    resume = run_dir.resume_checkpoint(fp)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    datamodule = ArrayDataModule(cfg, channels_last=_channels_last(cfg, on_gpu))
    net = build_network(cfg.model, num_classes=len(datamodule.stats["classes"]))
    if _channels_last(cfg, on_gpu):
        net = net.to(memory_format=torch.channels_last)
    n_params = count_parameters(net)
    module = Classifier(net, cfg, num_classes=len(datamodule.stats["classes"]))
    if cfg.trainer.compile:
        net.compile()

    is_zero = rank_zero_only.rank == 0
    tracker, client, run_id = None, None, None
    if cfg.tracking.enabled and is_zero:
        client, run_id, last_step = _open_run(cfg, run_dir, fp, datamodule.stats, n_params, resume is not None)
        tracker = tracking.MlflowTracker(client, run_id, last_step)
    elif is_zero:
        run_dir.save_state(fingerprint=fp)

    ckpt = ModelCheckpoint(dirpath=run_dir.checkpoints, filename="best", monitor="val/acc", mode="max",
                           enable_version_counter=False)
    # last.ckpt after every epoch, for resuming. Not `save_last=True` on the one above: that writes
    # last.ckpt only in epochs where best.ckpt improved, so a resume could repeat several epochs.
    latest = ModelCheckpoint(dirpath=run_dir.checkpoints, filename="last", monitor=None, save_top_k=1,
                             enable_version_counter=False)
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=cfg.trainer.strategy,
        precision=_precision(cfg, on_gpu),
        logger=False,
        callbacks=[c for c in (tracker, ckpt, latest) if c is not None],
        plugins=[SafeCheckpointIO()],
        profiler=NoProfiler(),
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir.path,
    )
    if cfg.model.family == "fastcnn" and resume is None:
        module.whiten_from = datamodule
    try:
        if resume is not None:
            log.info("resuming from %s", resume)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt.best_model_path, verbose=False)[0]
    except BaseException as e:
        if client is not None:
            _mark_failed(client, run_id, e)
        raise
    if not trainer.is_global_zero:
        return {}
    result = {
        "status": "FINISHED",
        "study": cfg.run.study,
        "variant": cfg.run.variant,
        "seed": cfg.seed,
        "model": cfg.model.family,
        "mlflow_run_id": run_id,
        "test_acc": float(tested["test/acc"]),
        "test_loss": float(tested["test/loss"]),
        "best_val_acc": float(ckpt.best_model_score) if ckpt.best_model_score is not None else float("nan"),
        "epochs": trainer.current_epoch,
        "params": n_params,
        "job_seconds": time.perf_counter() - t_start,
        "startup_seconds": module.startup_seconds,
        "train_seconds": module.train_seconds,
    }
    _write_artifacts(cfg, run_dir, module, datamodule, ckpt, result)
    if client is not None:
        _finish_run(client, run_id, run_dir, result)
    write_text(run_dir.result_file, json.dumps(result, indent=2) + "\n")
    log.info("%s seed %s: test/acc %.4f", cfg.run.variant, cfg.seed, result["test_acc"])
    return result


def _open_run(cfg, run_dir: RunDir, fp: str, stats: dict, n_params: int, resuming: bool):
    uri = tracking.resolve_uri(cfg.tracking.uri)
    client = tracking.connect(uri, cfg.tracking.timeout_s)
    experiment = cfg.tracking.experiment or cfg.run.study
    exp_id = tracking.ensure_experiment(client, experiment, Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" if uri.startswith("sqlite:") else None)
    state = run_dir.state()
    previous = state.get("mlflow_run_id") if resuming and state.get("tracking_uri") == uri else None
    commit, dirty = git_state()
    adds = ""
    if cfg.run.study != "adhoc" and cfg.run.variant != "adhoc":
        try:
            adds = load_study(cfg.run.study, _conf_dir()).variant(cfg.run.variant).adds
        except UserError:
            pass
    tags = {
        "cnnlab.kind": "train",
        "study": cfg.run.study,
        "variant": cfg.run.variant,
        "seed": cfg.seed,
        "model": cfg.model.family,
        "adds": adds,
        "git_commit": commit,
        "git_dirty": dirty,
        "data_md5": stats.get("archive_md5", ""),
        "zscore_mean": json.dumps([round(v, 6) for v in stats["mean"]]),
        "zscore_std": json.dumps([round(v, 6) for v in stats["std"]]),
        "normalize": cfg.data.normalize,
        "config_fingerprint": fp,
        **versions(),
    }
    params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    run_id, last_step = tracking.start_or_resume_run(client, exp_id, previous, f"{cfg.run.variant}-seed{cfg.seed}", params, tags)
    tracking.set_tags(client, run_id, {"device": device_name(torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu"))})
    config_path = run_dir.path / "config.yaml"
    write_text(config_path, OmegaConf.to_yaml(cfg))
    if last_step < 0:
        client.log_artifact(run_id, str(config_path))
        tracking.with_retry(client.log_metric, run_id, "params", n_params, step=0)
    run_dir.save_state(fingerprint=fp, mlflow_run_id=run_id, tracking_uri=uri, experiment_id=exp_id)
    return client, run_id, last_step


def _conf_dir() -> Path:
    return Path(os.environ.get("CNNLAB_CONF_DIR", CONF_DIR))


def _write_artifacts(cfg, run_dir: RunDir, module: Classifier, datamodule, ckpt, result: dict) -> None:
    classes = datamodule.stats["classes"]
    cm = module.confusion.cpu().numpy()
    out = run_dir.path / "artifacts"
    out.mkdir(exist_ok=True)
    header = "true\\predicted," + ",".join(classes)
    rows = [f"{classes[i]}," + ",".join(str(int(v)) for v in cm[i]) for i in range(len(classes))]
    write_text(out / "confusion_matrix.csv", "\n".join([header, *rows]) + "\n")
    title = f"{cfg.run.variant} seed {cfg.seed}: test acc {result['test_acc']:.3f}"
    figures.save(figures.confusion_figure(cm, classes, title), out / "confusion_matrix.png")
    kind = "templates (32x32x3)" if cfg.model.family == "mlp" else "kernels"
    figures.save(figures.filters_figure(first_layer_weight(module.net), f"{cfg.run.variant}: first-layer {kind}"), out / "first_layer_filters.png")


def _finish_run(client, run_id: str, run_dir: RunDir, result: dict) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    keys = ("test_acc", "test_loss", "best_val_acc", "epochs", "params", "job_seconds", "startup_seconds")
    final = {k: result[k] for k in keys if result[k] is not None}
    names = {"test_acc": "test/acc", "test_loss": "test/loss", "best_val_acc": "best_val_acc"}
    metrics = [Metric(names.get(k, k), float(v), now, 0) for k, v in final.items()]
    tracking.with_retry(client.log_batch, run_id, metrics=metrics)
    for f in sorted((run_dir.path / "artifacts").iterdir()):
        client.log_artifact(run_id, str(f))
    best = run_dir.checkpoints / "best.ckpt"
    if best.is_file():
        client.log_artifact(run_id, str(best), "checkpoints")
    client.set_terminated(run_id, "FINISHED")


def _mark_failed(client, run_id: str, error: BaseException) -> None:
    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    try:
        tracking.set_tags(client, run_id, {"error": f"{type(error).__name__}: {message}"[:4000]})
        client.set_terminated(run_id, status)
    except Exception as e:  # the store itself may be what failed; the original error matters more
        log.warning("could not mark MLflow run %s as %s: %s", run_id, status, e)


def parse_args(argv: list[str]) -> tuple[dict, list[str], Path]:
    """Split `study=`, `variant=`, `seed=` and `--config-dir DIR` from Hydra overrides."""
    named: dict = {}
    overrides: list[str] = []
    conf_dir = _conf_dir()
    it = iter(argv)
    for arg in it:
        if arg in ("--config-dir", "-cd"):
            conf_dir = Path(next(it, ""))
        elif arg.startswith("--config-dir="):
            conf_dir = Path(arg.split("=", 1)[1])
        elif arg.split("=", 1)[0] in ("study", "variant", "seed") and "=" in arg:
            key, value = arg.split("=", 1)
            named[key] = value
        elif arg in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        else:
            overrides.append(arg)
    if "seed" in named:
        if not named["seed"].isdigit():
            raise UserError(f"seed must be a non-negative integer, not '{named['seed']}'.")
        named["seed"] = int(named["seed"])
    if "variant" in named and "study" not in named:
        raise UserError("variant= needs study= too, e.g. study=quick variant=cnn_baseline.")
    return named, overrides, conf_dir


def quiet_lightning() -> None:
    """Drop Lightning's advertising and hints that do not apply to jobs started by Snakemake or SLURM."""
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")  # we start srun-less on purpose
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # an internal deprecation inside Lightning
    # Under DDP every process evaluates the whole val/test set, so their metrics need no syncing.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip")
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_lightning()
    try:
        named, overrides, conf_dir = parse_args(sys.argv[1:] if argv is None else argv)
        os.environ["CNNLAB_CONF_DIR"] = str(conf_dir)  # DDP re-launches this command: keep the same conf
        with tracking.quiet_mlflow():
            cfg = compose_config(overrides, named.get("study"), named.get("variant"), named.get("seed"), conf_dir)
            train(cfg)
    except UserError as e:
        print(f"cnnlab-train: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"cnnlab-train: error: {e}", file=sys.stderr)
        return 3
    except Exception as e:
        message = storage_error_message(e)
        if message is None:
            raise
        print(f"cnnlab-train: error: {message}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
