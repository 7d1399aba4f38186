"""Time build_report on a large synthetic study: `python bench/report_scale.py [--variants 50 --seeds 20]`.

Writes a SQLite MLflow store of variants x seeds finished training runs (30 epochs of per-epoch
metrics each, final metrics, the tags training sets; no artifacts, so the checkpoint figures are
placeholders), a study file naming them, and a small test set; then builds the report and prints
the time. The store is made once per folder and reused (--workdir). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from cnnlab.report import build_report
from cnnlab.study.studies import CONF_DIR

STUDY = "scale"
EPOCH_METRICS = (
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "lr",
    "train/l1_penalty",
    "train/l2_penalty",
    "epoch_seconds",
    "train/images_per_sec",
)


def variant_names(n: int) -> list[tuple[str, str, str]]:
    """(name, model, adds): half MLP, half CNN, each half led by its baseline."""
    out = []
    for family, count in (("mlp", n // 2), ("cnn", n - n // 2)):
        out += [(f"{family}_baseline", family, "baseline")]
        out += [(f"{family}_v{i:02d}", family, f"option {i}") for i in range(1, count)]
    return out


def write_study(conf: Path, variants, seeds: int, images: int) -> None:
    shutil.copytree(CONF_DIR, conf, dirs_exist_ok=True)
    lines = [
        f"description: {len(variants)} synthetic variants for the report benchmark.",
        f"seeds: {list(range(seeds))}",
        "variants:",
    ]
    lines += [f"  {name}: {{adds: {adds}, overrides: [model={model}]}}" for name, model, adds in variants]
    lines += ["report:", f"  sensitivity_images: {images}"]
    (conf / "study" / f"{STUDY}.yaml").write_text("\n".join(lines) + "\n")


def write_arrays(path: Path, n: int = 2000) -> None:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        x_test=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
        y_test=rng.integers(0, 10, n).astype(np.uint8),
    )
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    path.with_suffix(".json").write_text(
        json.dumps(
            {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "classes": classes, "archive_md5": "synthetic"}
        )
    )


def write_store(uri: str, root: Path, variants, seeds: int, epochs: int) -> None:
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(STUDY, artifact_location=(root / "artifacts").as_uri())
    rng = np.random.default_rng(1)
    for k, (name, model, adds) in enumerate(variants):
        for seed in range(seeds):
            tags = {
                "cnnlab.kind": "train",
                "study": STUDY,
                "variant": name,
                "seed": str(seed),
                "model": model,
                "adds": adds,
                "git_commit": "0123456789ab",
                "git_dirty": "False",
                "data_md5": "synthetic",
                "device": "cpu",
            }
            run_id = client.create_run(exp_id, run_name=f"{name}-seed{seed}", tags=tags).info.run_id
            acc = 0.4 + 0.3 * (model == "cnn") + 0.002 * k + rng.normal(0, 0.01)
            metrics = [
                Metric(key, float(acc * (1 - 0.5 / (e + 1)) + rng.normal(0, 0.005)), 0, e)
                for e in range(epochs)
                for key in EPOCH_METRICS
            ]
            final = {
                "test/acc": acc,
                "test/loss": 1.0,
                "best_val_acc": acc,
                "epochs": epochs,
                "params": 10**5 * (k + 1),
                "job_seconds": 60.0,
            }
            metrics += [Metric(key, float(v), 0, 0) for key, v in final.items()]
            for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
                client.log_batch(
                    run_id, metrics=metrics[i : i + 1000], params=[Param("model.family", model)] if i == 0 else []
                )
            client.set_terminated(run_id, "FINISHED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="report-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    variants = variant_names(args.variants)
    if not (root / "mlflow.db").exists():
        t0 = time.perf_counter()
        write_study(root / "conf", variants, args.seeds, 2000)
        write_arrays(root / "data" / "test.npz")
        write_store(uri, root, variants, args.seeds, args.epochs)
        print(f"store with {len(variants) * args.seeds} runs written in {time.perf_counter() - t0:.0f} s: {root}")
    t0 = time.perf_counter()
    result = build_report(uri, STUDY, root / "conf", root / "data" / "test.npz", root / "report")
    seconds = time.perf_counter() - t0
    print(f"build_report: {len(variants) * args.seeds} runs, {args.epochs} epochs each: {seconds:.1f} s")
    print(f"figures unavailable (no checkpoints): {', '.join(sorted(result['unavailable']))}")


if __name__ == "__main__":
    main()
