"""Start-up and after-training time of one training job, started cold and started warm.

    python -m bench.warm_start                       # 5 rounds on the prepared full CIFAR-10 arrays
    python -m bench.warm_start --rounds 3 --workdir /tmp/cnnlab-bench

Each round runs the same short job (the cpu study's mlp_baseline for one epoch over 5,000
images, tracked in a fresh SQLite store, as a workflow job is) twice: `python -m cnnlab.training.train`
(cold) and `python -m cnnlab.launch.forkserver` (warm: forked by the warm process, which the first warm
job starts and waits for; that first job is shown apart). Per job: the wall time of the command,
`startup_seconds` (process start to first step) and `after_training_seconds` (test, figures,
artifacts, closing the run). Then the medians; the last line is the warm/cold start-up headline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import data_args, prepared_arrays

JOB = ("study=cpu", "variant=mlp_baseline", "trainer.max_epochs=1", "trainer.limit_train_batches=40",
       "trainer.progress_bar=false", "trainer.threads=1")  # fmt: skip


def run_job(module: str, arrays: Path, folder: Path, name: str, env: dict) -> dict:
    cmd = [sys.executable, "-m", module, *JOB, f"data.arrays={arrays}", f"run.dir={folder / name}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"warm_start: {name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads((folder / name / "result.json").read_text())
    return {"wall": wall, "startup": result["startup_seconds"], "after": result["after_training_seconds"],
            "test_acc": result["test_acc"], "forked": "forked from the warm process" in proc.stderr}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(parser)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    arrays = prepared_arrays(args).resolve()
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir=args.workdir))
    runtime = Path(tempfile.mkdtemp(prefix="rt-"))  # its own warm process, stopped by its idle time
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_RUNTIME_DIR": str(runtime), "CNNLAB_WARM_IDLE_S": "20",
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}  # fmt: skip
    rows: dict[str, list[dict]] = {"cold": [], "warm, first": [], "warm": []}
    try:
        for i in range(args.rounds):
            for kind, module in (("cold", "cnnlab.training.train"), ("warm", "cnnlab.launch.forkserver")):
                row = run_job(module, arrays, folder, f"{kind}-{i}", env)
                if kind == "warm" and not row["forked"]:
                    raise SystemExit(f"warm_start: a warm job was not forked; the warm process's log is in {runtime}")
                key = "warm, first" if kind == "warm" and i == 0 else kind
                rows[key].append(row)
                print(f"{kind:5s} round {i}: wall {row['wall']:5.2f} s  start-up {row['startup']:5.2f} s  "
                      f"after training {row['after']:5.2f} s  test acc {row['test_acc']:.4f}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    accs = {r["test_acc"] for rs in rows.values() for r in rs}
    print(f"test accuracy of every job: {sorted(accs)} ({'identical' if len(accs) == 1 else 'DIFFERENT'})")
    for key, rs in rows.items():
        if rs:
            med = {k: statistics.median(r[k] for r in rs) for k in ("wall", "startup", "after")}
            print(f"{key:11s} ({len(rs)} jobs) medians: wall {med['wall']:.2f} s, start-up {med['startup']:.2f} s, "
                  f"after training {med['after']:.2f} s")  # fmt: skip
    cold = statistics.median(r["startup"] for r in rows["cold"])
    warm = statistics.median(r["startup"] for r in rows["warm"]) if rows["warm"] else float("nan")
    print(f"start-up per job, median: warm {warm:.2f} s against cold {cold:.2f} s")


if __name__ == "__main__":
    main()
