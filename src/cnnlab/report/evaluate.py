"""Evaluate a finished run without training: `cnnlab-eval results/quick/runs/cnn_all/seed0` (or an MLflow run id).

Rebuilds the network from the run's config.yaml and checkpoints/best.ckpt (the run folder's, or
the MLflow run's artifacts), then prints its test accuracy and loss as training computed them
(same batches, same normalization, the mirror-averaged logits when the run tested that way), its
confusion matrix, and its accuracy under the report's shifts and rescalings. `--json FILE`
writes the same numbers as JSON (`--json -`: to stdout instead of the tables).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from cnnlab.atomic import write_text
from cnnlab.data.preprocess import load_arrays, load_stats
from cnnlab.errors import UserError
from cnnlab.models import build_network
from cnnlab.report import sensitivity
from cnnlab.report.networks import TrainedNet, num_classes
from cnnlab.report.sections.position_scale import DEFAULT_IMAGES
from cnnlab.study.studies import load_study
from cnnlab.tracking import store as tracking
from cnnlab.tracking.uri import store_uri
from cnnlab.training.checkpoint import load_state_dict
from cnnlab.training.rundir import RunDir

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow names a run


@dataclass
class FinishedRun:
    """Where a run's network comes from, and what its training logged."""

    source: str  # the run folder or "MLflow run <id>"
    config_file: Path
    checkpoint: Path
    run_id: str | None
    logged: dict  # test_acc, test_loss as logged at the end of training (absent: not known)


def from_folder(folder: Path) -> FinishedRun:
    run_dir = RunDir(folder)
    for needed in (run_dir.config_file, run_dir.checkpoints / "best.ckpt"):
        if not needed.is_file():
            raise UserError(
                f"{needed} does not exist: {folder} is not the folder of a finished run; give the run.dir of a "
                "run that trained to the end, or its MLflow run id."
            )
    result = json.loads(run_dir.result_file.read_text()) if run_dir.result_file.is_file() else {}
    logged = {k: result[k] for k in ("test_acc", "test_loss") if result.get(k) is not None}
    run_id = result.get("mlflow_run_id") or run_dir.state().get("mlflow_run_id")
    return FinishedRun(str(folder), run_dir.config_file, run_dir.checkpoints / "best.ckpt", run_id, logged)


def from_mlflow(run_id: str, uri: str, into: Path) -> FinishedRun:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # two small files: no bars
    client = tracking.connect(uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise UserError(
            f"The tracking store {uri} has no run {run_id}; check the id, or point --uri "
            "(or MLFLOW_TRACKING_URI) at the store it was trained into."
        ) from None
    files = {}
    for artifact in ("config.yaml", "checkpoints/best.ckpt"):
        try:
            files[artifact] = Path(client.download_artifacts(run_id, artifact, str(into)))
        except Exception:
            raise UserError(
                f"MLflow run {run_id} has no artifact {artifact} (only runs that trained to the end log their "
                "best checkpoint); evaluate a finished run, or its run folder."
            ) from None
    metrics = run.data.metrics
    logged = {k: metrics[m] for k, m in (("test_acc", "test/acc"), ("test_loss", "test/loss")) if m in metrics}
    return FinishedRun(f"MLflow run {run_id}", files["config.yaml"], files["checkpoints/best.ckpt"], run_id, logged)


def load_network(run: FinishedRun) -> TrainedNet:
    cfg = OmegaConf.load(run.config_file)
    state = load_state_dict(run.checkpoint)
    try:
        net = build_network(cfg.model, num_classes=num_classes(state))
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(
            f"The checkpoint of {run.source} does not fit the network its config.yaml describes "
            f"({str(e).splitlines()[0]}); was the run folder reused for another config?"
        ) from None
    net.eval()
    logged_acc = run.logged.get("test_acc", float("nan"))
    return TrainedNet(cfg.run.variant, int(cfg.seed), run.run_id or "", net, cfg, logged_acc)


@torch.no_grad()
def test_metrics(trained: TrainedNet, x: torch.Tensor, y: torch.Tensor, stats: dict) -> dict:
    """Accuracy, loss and confusion matrix on (x, y) as the run's test step computed them."""
    cfg = trained.cfg
    batch_size, flip = int(cfg.trainer.eval_batch_size), bool(cfg.trainer.get("test_flip_tta", False))
    k = len(stats["classes"])
    confusion = torch.zeros(k, k, dtype=torch.long)
    loss_sum = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = trained.prepare(x[i : i + batch_size], stats), y[i : i + batch_size]
        logits = trained.net(xb)
        if flip:
            logits = (logits + trained.net(xb.flip(3))) / 2
        # The test step's loss is the batch mean, summed over batches weighted by their size.
        loss_sum += float(F.cross_entropy(logits, yb)) * len(yb)
        confusion += torch.bincount(yb * k + logits.argmax(1), minlength=k * k).reshape(k, k)
    n = int(confusion.sum())
    return {"test_acc": float(confusion.trace()) / max(n, 1), "test_loss": loss_sum / max(n, 1),
            "confusion": confusion.numpy()}


def sensitivity_images(cfg) -> int:
    """How many test images the report shifts and rescales for this run's study."""
    try:
        return int(load_study(cfg.run.study).report.get("sensitivity_images", DEFAULT_IMAGES))
    except UserError:  # a run by hand, or a study this checkout does not have
        return DEFAULT_IMAGES


def evaluate(run: FinishedRun, arrays: str | Path | None = None, shift_images: int | None = None) -> dict:
    """Every number `cnnlab-eval` prints, as plain data."""
    trained = load_network(run)
    arrays = Path(arrays or trained.cfg.data.arrays)
    stats = load_stats(arrays)
    data = load_arrays(arrays)
    x, y = torch.from_numpy(data["x_test"]), torch.from_numpy(data["y_test"]).long()
    measured = test_metrics(trained, x, y, stats)
    out = {
        "run": run.source,
        "mlflow_run_id": run.run_id,
        "study": str(trained.cfg.run.study),
        "variant": trained.variant,
        "seed": trained.seed,
        "arrays": str(arrays),
        "test_images": len(y),
        "test_acc": measured["test_acc"],
        "test_loss": measured["test_loss"],
        "logged_test_acc": run.logged.get("test_acc"),
        "logged_test_loss": run.logged.get("test_loss"),
        "classes": list(stats["classes"]),
        "confusion_matrix": measured["confusion"].tolist(),
    }
    if shift_images != 0:
        n = min(shift_images or sensitivity_images(trained.cfg), len(y))
        table = sensitivity.evaluate(trained, x[:n], y[:n], stats)
        shifts = table[table["transform"] == "shift"]
        out["sensitivity_images"] = n
        out["shift_acc"] = {
            mode: {int(r.amount): r.acc for r in rows.itertuples()} for mode, rows in shifts.groupby("mode", sort=False)
        }
        scales = table[table["transform"] == "scale"]
        out["scale_acc"] = {  # zoom out: one row per padding mode; zoom in: "crop"; 1x under every mode
            mode: {float(r.amount): r.acc for r in scales[(scales["mode"] == mode) | (scales.amount == 1)].itertuples()}
            for mode in dict.fromkeys(scales["mode"])
        }
    return out


def tables(result: dict) -> str:
    """The result as text tables for a terminal."""
    logged = result["logged_test_acc"]
    lines = [
        f"run         {result['run']}" + (f" (MLflow run {result['mlflow_run_id']})" if result["mlflow_run_id"]
                                          and "MLflow" not in result["run"] else ""),
        f"variant     {result['variant']} of study {result['study']}, seed {result['seed']}",
        f"test set    {result['test_images']} images from {result['arrays']}",
        "",
        f"test accuracy  {result['test_acc']:.4f}" + (f"   (logged at the end of training: {logged:.4f})"
                                                     if logged is not None else ""),
        f"test loss      {result['test_loss']:.4f}" + (f"   (logged: {result['logged_test_loss']:.4f})"
                                                     if result["logged_test_loss"] is not None else ""),
        "",
        "confusion matrix (rows: true class, columns: predicted class)",
    ]
    classes = result["classes"]
    short = [c[:6] for c in classes]
    width = max(len(c) for c in classes)
    lines.append(" " * width + "".join(f"{c:>7}" for c in short))
    for name, row in zip(classes, result["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>7}" for v in row))
    if "shift_acc" in result:
        modes = list(result["shift_acc"])
        lines += ["", f"accuracy under shifts (first {result['sensitivity_images']} test images, each moved one way "
                      "by that many pixels; the border filled per padding mode)",
                  "pixels" + "".join(f"{m:>11}" for m in modes)]
        for amount in result["shift_acc"][modes[0]]:
            lines.append(f"{amount:>6}" + "".join(f"{result['shift_acc'][m][amount]:>11.4f}" for m in modes))
        lines += ["", "accuracy under zooms about the centre (in: cropped and resized; out: padded with each mode)"]
        for mode, accs in result["scale_acc"].items():
            lines += [f"  {mode}"] + [f"{f:>8.3f}   {acc:.4f}" for f, acc in accs.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnlab-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder (its run.dir) or an MLflow run id")
    parser.add_argument("--uri", default="", help="MLflow tracking URI for a run id (default: MLFLOW_TRACKING_URI, "
                                                  "else sqlite:///results/mlflow.db)")
    parser.add_argument("--arrays", help="the prepared .npz to test on (default: the run's data.arrays)")
    parser.add_argument("--shift-images", type=int, default=None,
                        help="test images to shift and rescale (default: as the report does; 0: skip)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE ('-': stdout only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with tempfile.TemporaryDirectory() as tmp, tracking.quiet_mlflow():
            if Path(args.run).is_dir():
                run = from_folder(Path(args.run))
            elif RUN_ID.fullmatch(args.run):
                # Where the command starts, once: a URI's credentials go into MLflow's variables.
                run = from_mlflow(args.run, store_uri(args.uri, "--uri"), Path(tmp))
            else:
                raise UserError(f"'{args.run}' is neither a run folder nor an MLflow run id (32 hex digits).")
            result = evaluate(run, args.arrays, args.shift_images)
    except UserError as e:
        print(f"cnnlab-eval: error: {e}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(json.dumps(result, indent=2))
        return 0
    print(tables(result))
    if args.json:
        write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
