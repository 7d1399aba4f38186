"""Train one run: `cnnlab-train study=quick variant=cnn_zscore seed=0 run.dir=results/...`.

`cnnlab-train` (or `python -m cnnlab.training.train`) is a Hydra application: every argument is an
override (`trainer.max_epochs=3`, `model=cnn`, ...), `--help` lists the config groups, `--cfg job`
prints the composed config, `-m` sweeps (`-m study=quick variant=mlp_all,cnn_all seed=0,1`),
`--config-dir` puts another `conf/` first. `train(cfg)` is the function tests and other code call
directly. A job that is started again after an interruption resumes from its last checkpoint and
continues the same MLflow run.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import time
import traceback

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cnnlab.atomic import write_text
from cnnlab.data.datamodule import ArrayDataModule
from cnnlab.data.preprocess import check_prepared, load_stats
from cnnlab.errors import UserError, storage_error_message
from cnnlab.models import build_network, count_parameters, family_of
from cnnlab.process_start import seconds_since_job_start
from cnnlab.study.config import check_accelerator, fingerprint, validate
from cnnlab.study.studies import CONF_DIR, apply_tuned_value, register_schema
from cnnlab.tracking.store import quiet_mlflow
from cnnlab.tracking.uri import move_environment_credentials
from cnnlab.training import command_line
from cnnlab.training.artifacts import write_run_artifacts
from cnnlab.training.gpu import pin_to_free_gpu
from cnnlab.training.mlflow_run import TrainingRun, run_tags, variant_context
from cnnlab.training.module import Classifier, NonFiniteLossError
from cnnlab.training.rundir import RunDir
from cnnlab.training.trainer import build_trainer, choose_precision, denormals_flushed, quiet_lightning

log = logging.getLogger("cnnlab.training.train")


def train(cfg: DictConfig) -> dict:
    """Train, validate each epoch, test the best checkpoint; return the final metrics."""
    with denormals_flushed(cfg.trainer.flush_denormal):
        return _train(cfg, time.perf_counter())


def _train(cfg: DictConfig, t_start: float) -> dict:
    # What this machine and the data set must offer, checked before any MLflow run exists.
    check_accelerator(cfg, torch.cuda.device_count())
    check_prepared(cfg.data.arrays)
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    gpu_lock = pin_to_free_gpu() if _runs_on_one_gpu(cfg) else None  # noqa: F841
    run_dir = RunDir(cfg.run.dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # the one process that writes the folder
        run_dir.clear_leftovers()
    fp = fingerprint(cfg)
    resume = run_dir.resume_checkpoint(fp)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    stats = load_stats(cfg.data.arrays)
    net = build_network(cfg.model, num_classes=len(stats["classes"]))
    memory_channels_last = net.trains_channels_last(cfg.trainer.channels_last)
    datamodule = ArrayDataModule(cfg, channels_last=memory_channels_last)
    if memory_channels_last:
        net = net.to(memory_format=torch.channels_last)
    n_params = count_parameters(net)
    module = Classifier(net, cfg, num_classes=len(stats["classes"]))
    if resume is None:
        module.fit_to_data_from = datamodule
    if cfg.trainer.compile:
        net.compile()
    precision = choose_precision(cfg, run_dir, resuming=resume is not None)
    log.info("precision: %s", precision.describe())

    run = None
    if cfg.tracking.enabled and rank_zero_only.rank == 0:
        tags = run_tags(cfg, net, stats, fp, variant_context(cfg, command_line.conf_dir_in_use()))
        if cfg.run.sweep:
            tags["cnnlab.sweep"] = cfg.run.sweep  # the runs of one `cnnlab-train -m` share it
        run = TrainingRun(cfg, run_dir, fp, tags, resuming=resume is not None, stats=stats)
    elif rank_zero_only.rank == 0:
        write_text(run_dir.config_file, OmegaConf.to_yaml(cfg))  # what cnnlab-eval rebuilds the network from
        run_dir.save_state(fingerprint=fp)

    # From here on the run exists: every way out marks it FINISHED, FAILED or KILLED.
    try:
        if run is not None:
            run.log_parameter_count(n_params)
            run.log_new_params(precision.params())
        trainer, best = build_trainer(cfg, run_dir, [run.callback()] if run else [], precision.precision)
        if resume is not None:
            log.info("resuming from %s", resume)
        with frozen_heap():
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
            if trainer.interrupted:
                raise KeyboardInterrupt("training was interrupted")
            t_fitted = time.perf_counter()  # the last epoch's validation done; the after-training work starts
            tested = trainer.test(module, datamodule=datamodule, ckpt_path=best.best_model_path, verbose=False)[0]
        if not trainer.is_global_zero:
            return {}
        result = {
            "status": "FINISHED",
            "study": cfg.run.study,
            "variant": cfg.run.variant,
            "seed": cfg.seed,
            "model": family_of(cfg.model),
            "mlflow_run_id": run.run_id if run else None,
            "test_acc": float(tested["test/acc"]),
            "test_loss": float(tested["test/loss"]),
            "best_val_acc": float(best.best_model_score) if best.best_model_score is not None else float("nan"),
            "epochs": trainer.current_epoch,
            "params": n_params,
            "job_seconds": time.perf_counter() - t_start,
            "startup_seconds": module.startup_seconds,
            "train_seconds": module.train_seconds,
        }
        label = f"{cfg.run.variant} seed {cfg.seed}"
        write_run_artifacts(run_dir, net, module.confusion.cpu().numpy(), stats["classes"], label, result["test_acc"])
        if run is not None:
            run.finish(run_dir, result)
    except NonFiniteLossError as e:
        if run is not None:
            run.fail(e)
        if cfg.trainer.if_loss_diverges != "record":
            raise
        # A sweep keeps going: a rate that makes the loss diverge is one of its answers.
        log.warning("%s", e)
        result = {"status": "DIVERGED", "study": cfg.run.study, "variant": cfg.run.variant, "seed": cfg.seed,
                  "model": family_of(cfg.model), "mlflow_run_id": run.run_id if run else None,
                  "test_acc": float("nan"), "best_val_acc": float("nan"), "error": str(e)}
        run_dir.save_result(result)
        return result
    except SIGTERMException as e:
        # Lightning stops a run on SIGTERM (a scheduler's preemption, `kill`) with a bare SystemExit,
        # whose exit status is 0: the job would look finished, without its outputs.
        if run is not None:
            run.fail(e)
        print(f"cnnlab-train: stopped by SIGTERM in epoch {trainer.current_epoch}; run the same command "
              "again to resume from the last checkpoint.", file=sys.stderr)  # fmt: skip
        raise SystemExit(128 + signal.SIGTERM) from None  # the status of a process killed by SIGTERM
    except BaseException as e:
        if run is not None:
            run.fail(e)
        raise
    # Only in result.json: they end after the run's last MLflow write. Seconds: test, figures,
    # artifacts and closing the MLflow run; and process start to here (imports included).
    result["after_training_seconds"] = time.perf_counter() - t_fitted
    result["process_seconds"] = seconds_since_job_start()
    run_dir.save_result(result)
    log.info("%s seed %s: test/acc %.4f", cfg.run.variant, cfg.seed, result["test_acc"])
    return result


def _runs_on_one_gpu(cfg: DictConfig) -> bool:
    """Whether this process should take a GPU slot: a run on one device may. A DDP run (devices > 1)
    needs every GPU it was given, and its ranks that Lightning relaunches (LOCAL_RANK set) inherit
    rank zero's GPUs."""
    return (cfg.trainer.accelerator in ("auto", "gpu", "cuda") and cfg.trainer.devices == 1
            and "LOCAL_RANK" not in os.environ)


def _failure(error: BaseException) -> tuple[int, str] | None:
    """Exit code and sentence for a failure the user can act on; None for a bug (its traceback is wanted)."""
    if isinstance(error, UserError):
        return 2, str(error)
    if isinstance(error, NonFiniteLossError):
        return 3, str(error)
    message = storage_error_message(error)
    return (4, message) if message is not None else None


def _exit_on_failure(error: BaseException, bug_traceback: bool = False) -> None:
    failure = _failure(error)
    if failure is None:
        if bug_traceback:  # the whole of it: Hydra's own handler would shorten it
            traceback.print_exception(error, file=sys.stderr)
            raise SystemExit(1) from None
        return
    print(f"cnnlab-train: error: {failure[1]}", file=sys.stderr)
    raise SystemExit(failure[0]) from None  # past Hydra's handler, which would print a traceback


# As typed, credentials moved out: Lightning's DDP re-launches this command for each process.
_COMMAND_LINE: list[str] = []


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def run_job(cfg: DictConfig) -> float | None:
    """One job of `cnnlab-train`: Hydra's config, checked, trained; returns the test accuracy."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        with open_dict(cfg):
            cfg.run.dir = os.path.join(hydra_cfg.sweep.dir, hydra_cfg.sweep.subdir)
            cfg.run.sweep = hydra_cfg.sweep.dir
    sys.argv = list(_COMMAND_LINE)
    try:
        apply_tuned_value(cfg, list(hydra_cfg.overrides.task))
        result = train(validate(cfg))
    except Exception as e:
        _exit_on_failure(e, bug_traceback=True)
        raise
    return result.get("test_acc")


@contextlib.contextmanager
def frozen_heap():
    """Training and test with the objects that exist now out of the garbage collector's sight.

    They live as long as the run; each full collection that training's own objects trigger would
    otherwise walk them all, the objects torch, Lightning and MLflow import among them
    (docs/dev/notes.md). A process frozen already (a job forked warm) stays as it is; one frozen here is
    thawed after, so a caller that goes on collects as before.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def main(argv: list[str] | None = None) -> int:
    """`cnnlab-train`: study= expanded and every job checked, then Hydra runs `run_job` once per job."""
    quiet_lightning()
    register_schema()
    typed = list(sys.argv) if argv is None else [sys.argv[0], *argv]
    try:
        # Where the command starts, once: a URI's credentials go into MLflow's variables, so no
        # config, Hydra record, run folder or re-launched command line holds them.
        move_environment_credentials()
        _COMMAND_LINE[:] = [typed[0], *command_line.without_credentials(typed[1:])]
        with quiet_mlflow():
            sys.argv = [_COMMAND_LINE[0], *command_line.prepare(_COMMAND_LINE[1:])]
            run_job()
    except Exception as e:
        _exit_on_failure(e)
        raise
    finally:
        sys.argv = typed
        if argv is None:
            # The program ends next. Freezing the heap (millions of objects from torch, Lightning,
            # MLflow) spares the interpreter's garbage collections at exit (docs/dev/notes.md). Not for
            # callers that pass argv (tests, other code): their process goes on and should collect.
            gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
