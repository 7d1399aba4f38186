"""What a training job's MLflow additions cost: the logged model, the data set input, system metrics.

    python -m bench.mlflow_logging                    # quick and lecture networks, 3 fresh processes each
    python -m bench.mlflow_logging --repeats 5 --workdir /tmp/cnnlab-bench

Each sample is a fresh process, as a training job is, on the prepared full CIFAR-10 arrays and a
fresh SQLite store: it creates a run the way a job does (tags, parameters, dataset input), starts
the system-metrics monitor and the model-logging warm-up, lets them run for --train-s seconds in
place of training, then times what a job does after training: stopping the monitor and logging
the best checkpoint as a model (reading the input example, writing weights, MLflow's checks and
uploads). "cold" runs the same without the warm-up. The monitor's own cost is timed per sample
(collect, aggregate, one batch write), in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, data_args, prepared_arrays

NETWORKS = {  # (study, variant): the smallest and largest networks of the two budgets
    "quick mlp": ("quick", "mlp_baseline"),
    "quick cnn": ("quick", "cnn_baseline"),
    "lecture mlp": ("lecture", "mlp_all"),
    "lecture cnn": ("lecture", "cnn_all"),
}


def one_job(arrays: Path, study: str, variant: str, warm: bool, train_s: float, tmp: Path) -> dict:
    """Runs in a fresh process: the after-training MLflow work of one job, timed, its store in tmp."""
    import threading

    import mlflow
    import torch
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from cnnlab.models import build_network
    from cnnlab.study.studies import CONF_DIR, compose_config
    from cnnlab.tracking import model as mlflow_model
    from cnnlab.tracking import store as tracking
    from cnnlab.training.mlflow_run import TrainingRun, run_tags, variant_context
    from cnnlab.training.rundir import RunDir

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    overrides = [f"data.arrays={arrays}", f"tracking.uri={uri}", f"run.dir={tmp / 'run'}"]
    cfg = compose_config(overrides, study, variant, 0)
    tracking.init_store(uri, study, tmp / "mlartifacts")  # as the workflow's init_tracking step does
    if not warm:  # no warm-up: MLflow scans the installed packages when the model is logged

        def no_warm_up() -> threading.Thread:
            thread = threading.Thread(target=lambda: None)
            thread.start()
            return thread

        mlflow_model.warm_up = no_warm_up
    stats = json.loads(arrays.with_suffix(".json").read_text())
    net = build_network(cfg.model)
    run_dir = RunDir(cfg.run.dir)
    run_dir.checkpoints.mkdir(parents=True)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 1},
               run_dir.checkpoints / "best.ckpt")

    start = time.perf_counter()
    run = TrainingRun(cfg, run_dir, "bench", run_tags(cfg, net, stats, "bench", variant_context(cfg, CONF_DIR)),
                      resuming=False, stats=stats)
    open_s = time.perf_counter() - start
    time.sleep(train_s)  # training would run here, with the monitor sampling

    start = time.perf_counter()
    run._stop_system_metrics()
    stop_s = time.perf_counter() - start
    start = time.perf_counter()
    run.log_model(run_dir.checkpoints / "best.ckpt")
    model_s = time.perf_counter() - start

    # The monitor's cost per sample, timed directly (the thread above did the same work).
    monitor = SystemMetricsMonitor(run.run_id, tracking_uri=uri)
    samples, cpu0, wall0 = 20, time.thread_time(), time.perf_counter()
    for _ in range(samples):
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
        mlflow.MlflowClient(uri).get_run(run.run_id)  # the monitor's check that the run still runs
    sample_s = (time.perf_counter() - wall0) / samples
    sample_cpu_s = (time.thread_time() - cpu0) / samples
    weights_mb = sum(p.numel() * p.element_size() for p in net.state_dict().values()) / 1e6
    return {"open_s": open_s, "stop_monitor_s": stop_s, "log_model_s": model_s, "sample_s": sample_s,
            "sample_cpu_s": sample_cpu_s, "weights_mb": weights_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(p)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-s", type=float, default=12.0, help="seconds standing in for training")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: "study variant warm|cold", one sample
    args = p.parse_args()
    arrays = prepared_arrays(args)
    if args.one:
        study, variant, mode = args.one.split()
        with tempfile.TemporaryDirectory(prefix="cnnlab-bench-mlflow-") as tmp:
            print(json.dumps(one_job(arrays, study, variant, mode == "warm", args.train_s, Path(tmp))))
        return
    results: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeats):  # alternating, so drift of the shared machine hits all alike
        for name, (study, variant) in NETWORKS.items():
            for mode in ("warm", "cold"):
                cmd = [sys.executable, "-m", "bench.mlflow_logging", "--workdir", args.workdir, "--archive",
                       args.archive, "--md5", args.md5, "--train-s", str(args.train_s), "--one",
                       f"{study} {variant} {mode}"]
                out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
                results.setdefault((name, mode), []).append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'network':<12} {'weights MB':>10} {'mode':<5} {'log model s (each sample)':<34} {'stop monitor s':>14}")
    for (name, mode), rows in results.items():
        each = " ".join(f"{r['log_model_s']:.2f}" for r in rows)
        print(f"{name:<12} {rows[0]['weights_mb']:10.1f} {mode:<5} {each:<34} "
              f"{statistics.median(r['stop_monitor_s'] for r in rows):14.3f}")
    rows = [r for rs in results.values() for r in rs]
    opened = statistics.median(r["open_s"] for r in rows)
    print(f"run opened (tags, params, dataset input, monitor start): median {opened:.2f} s")
    wall, cpu = (1000 * statistics.median(r[k] for r in rows) for k in ("sample_s", "sample_cpu_s"))
    print(f"system-metrics sample (collect, one batch write, run check): median {wall:.1f} ms wall, {cpu:.1f} ms CPU")


if __name__ == "__main__":
    main()
