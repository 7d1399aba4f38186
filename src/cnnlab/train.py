"""Train one run: `python -m cnnlab.train study=quick variant=cnn_zscore seed=0 run.dir=results/...`.

Every other argument is a Hydra override (`trainer.max_epochs=3`, `model=cnn`, ...); `--config-dir`
points at another `conf/`. `train(cfg)` is the function tests and other code call directly.
A job that is started again after an interruption resumes from its last checkpoint and continues
the same MLflow run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cnnlab import tracking
from cnnlab.artifacts import write_run_artifacts
from cnnlab.config import fingerprint
from cnnlab.datamodule import ArrayDataModule, load_stats
from cnnlab.errors import UserError, storage_error_message
from cnnlab.gpu import pin_to_free_gpu
from cnnlab.mlflow_run import TrainingRun, run_tags, variant_context
from cnnlab.models import build_network, count_parameters, family_of
from cnnlab.module import Classifier, NonFiniteLossError
from cnnlab.rundir import RunDir
from cnnlab.study import CONF_DIR, compose_config
from cnnlab.trainer import build_trainer, channels_last, quiet_lightning

log = logging.getLogger("cnnlab.train")


def train(cfg: DictConfig) -> dict:
    """Train, validate each epoch, test the best checkpoint; return the final metrics."""
    t_start = time.perf_counter()
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    gpu_lock = pin_to_free_gpu() if cfg.trainer.accelerator in ("auto", "gpu", "cuda") else None  # noqa: F841
    run_dir = RunDir(cfg.run.dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(cfg)
    resume = run_dir.resume_checkpoint(fp)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    stats = load_stats(cfg.data.arrays)
    net = build_network(cfg.model, num_classes=len(stats["classes"]))
    memory_channels_last = channels_last(cfg, net)
    datamodule = ArrayDataModule(cfg, channels_last=memory_channels_last)
    if memory_channels_last:
        net = net.to(memory_format=torch.channels_last)
    n_params = count_parameters(net)
    module = Classifier(net, cfg, num_classes=len(stats["classes"]))
    if resume is None:
        module.fit_to_data_from = datamodule
    if cfg.trainer.compile:
        net.compile()

    run = None
    if cfg.tracking.enabled and rank_zero_only.rank == 0:
        tags = run_tags(cfg, net, stats, fp, variant_context(cfg, _conf_dir()))
        run = TrainingRun(cfg, run_dir, fp, tags, resuming=resume is not None, stats=stats)
        run.log_parameter_count(n_params)
    elif rank_zero_only.rank == 0:
        run_dir.save_state(fingerprint=fp)

    trainer, best = build_trainer(cfg, run_dir, [run.callback()] if run else [])
    try:
        if resume is not None:
            log.info("resuming from %s", resume)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=best.best_model_path, verbose=False)[0]
    except BaseException as e:
        if run is not None:
            run.fail(e)
        raise
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
    run_dir.save_result(result)
    log.info("%s seed %s: test/acc %.4f", cfg.run.variant, cfg.seed, result["test_acc"])
    return result


def _conf_dir() -> Path:
    return Path(os.environ.get("CNNLAB_CONF_DIR", CONF_DIR))


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
