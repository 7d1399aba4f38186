"""Trained networks rebuilt from a run's MLflow artifacts (config.yaml, checkpoints/best.ckpt)."""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from omegaconf import OmegaConf

from cnnlab.data.batches import normalize
from cnnlab.errors import UserError
from cnnlab.models import Network, build_network, family_of
from cnnlab.report.runs import FINISHED, RunRecord

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass
class TrainedNet:
    variant: str
    seed: int
    run_id: str
    net: Network
    cfg: object
    test_acc: float

    @property
    def family(self) -> str:
        return family_of(self.cfg.model)

    @property
    def label(self) -> str:
        return f"{self.variant} (seed {self.seed})"

    def prepare(self, x_uint8: torch.Tensor, stats: dict) -> torch.Tensor:
        """uint8 images (B, 3, H, W) normalized the way this network was trained."""
        if self.cfg.data.normalize == "zscore":
            return normalize(x_uint8, stats["mean"], stats["std"])
        return normalize(x_uint8, None, None)

    def __post_init__(self):
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    @property
    def channels_last(self) -> bool:
        """Whether the run trained and tested in channels-last memory format (trainer.channels_last)."""
        setting = OmegaConf.select(self.cfg, "trainer.channels_last", default="auto")
        return isinstance(self.net, Network) and self.net.trains_channels_last(str(setting).lower())

    @torch.no_grad()
    def predict(self, x_uint8: torch.Tensor, stats: dict) -> torch.Tensor:
        """Class predictions, in batches of the run's trainer.eval_batch_size and in its memory format,
        as its test ran: on a CPU several times faster for a CNN than large channels-first batches,
        with the same predictions (docs/dev/notes.md)."""
        batch_size = int(OmegaConf.select(self.cfg, "trainer.eval_batch_size", default=None) or 500)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        out = []
        for i in range(0, len(x_uint8), batch_size):
            x = self.prepare(x_uint8[i : i + batch_size], stats)
            out.append(self.net(x.contiguous(memory_format=memory_format)).argmax(1))
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def download(client: MlflowClient, run_id: str, artifact: str, dst: Path) -> Path | None:
    try:
        return Path(client.download_artifacts(run_id, artifact, str(dst)))
    except Exception as e:  # absent artifact, unreachable artifact store: the figure says unavailable
        log.info(
            "run %s: artifact %s unavailable (%s)", run_id, artifact, str(e).splitlines()[0][:200] if str(e) else e
        )
        return None


def read_config(path: Path | None, run_id: str):
    """A downloaded config.yaml, or None (with a note in the log) when it is absent or damaged."""
    if path is None:
        return None
    try:
        cfg = OmegaConf.load(path)
        cfg.model  # noqa: B018 (a config without a model is not one cnnlab wrote)
        return cfg
    except Exception as e:  # not YAML, not a mapping, cut short
        log.warning("run %s: its config.yaml artifact is damaged (%s); figures that need it are left out",
                    run_id, type(e).__name__)
        return None


def load_config(client: MlflowClient, run_id: str):
    with tempfile.TemporaryDirectory() as tmp:
        return read_config(download(client, run_id, "config.yaml", Path(tmp)), run_id)


def num_classes(state_dict: dict) -> int:
    """The output size: the last weight matrix's row count."""
    last = [v for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 2][-1]
    return last.shape[0]


def load_trained(client: MlflowClient, record: RunRecord) -> TrainedNet | None:
    # Imported here, with Lightning: the Snakefile imports this module (through the report's registry)
    # at every start.
    from cnnlab.training.checkpoint import load_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = download(client, record.run_id, "config.yaml", Path(tmp))
        ckpt_path = download(client, record.run_id, "checkpoints/best.ckpt", Path(tmp))
        cfg = read_config(cfg_path, record.run_id)
        if cfg is None or ckpt_path is None:
            return None
        try:
            state = load_state_dict(ckpt_path)
        except Exception as e:  # cut short, not a torch file, not weights: never loaded unsafely
            log.warning("run %s: its checkpoints/best.ckpt artifact is damaged (%s); figures that need this "
                        "network show why they are missing", record.run_id, type(e).__name__)
            return None
    try:
        net = build_network(cfg.model, num_classes=num_classes(state))
        net.load_state_dict(state)
    except (UserError, RuntimeError, IndexError, KeyError, TypeError, ValueError) as e:
        # an older cnnlab's config, weights of another shape, or a damaged one
        log.info("run %s: its network cannot be rebuilt (%s)", record.run_id, str(e).splitlines()[0])
        return None
    return TrainedNet(record.variant, record.seed, record.run_id, net.eval(), cfg, record.metric("test/acc"))


def first_layer_params(net: Network) -> int:
    """Weights and bias of the layer that sees the pixels: where the input's dimensionality bites."""
    layer = net.first_layer()
    return layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0)


def first_layer_counts(client: MlflowClient, records: list[RunRecord]) -> dict[str, int]:
    """Per variant, the first layer's parameters of a network rebuilt from one finished run's config."""
    counts = {}
    for variant in dict.fromkeys(r.variant for r in records):
        run = next((r for r in records if r.variant == variant and r.state == FINISHED), None)
        cfg = load_config(client, run.run_id) if run else None
        try:
            if cfg is not None:
                counts[variant] = first_layer_params(build_network(cfg.model))
        except (UserError, TypeError, ValueError, KeyError) as e:  # an older cnnlab's config, or a damaged one
            reason = str(e).splitlines()[0] if str(e) else e
            log.info("run %s: no network from its config.yaml (%s)", run.run_id, reason)
    return counts


def best_records(records: list[RunRecord], table) -> dict[str, RunRecord]:
    """Per architecture (dense, convolutional), the best variant and its best seed, both chosen on
    validation accuracy (the test split chooses nothing)."""
    best = {}
    ranked = table[table.n_runs > 0].sort_values("best_val_acc_mean", ascending=False)
    for architecture, rows in ranked.groupby("architecture", sort=False):
        variant = rows.iloc[0].variant
        runs = [r for r in records if r.variant == variant and r.state == FINISHED]
        best[architecture] = max(
            runs, key=lambda r: -math.inf if math.isnan(r.metric("best_val_acc")) else r.metric("best_val_acc")
        )
    return best


def load_best(client: MlflowClient, records: list[RunRecord], table) -> dict[str, TrainedNet]:
    nets = {}
    for architecture, record in best_records(records, table).items():
        trained = load_trained(client, record)
        if trained is not None:
            nets[architecture] = trained
            log.info("best %s network: %s, test acc %.4f", architecture, trained.label, trained.test_acc)
    return nets


def confusion_matrix(
    client: MlflowClient, trained: TrainedNet, x: torch.Tensor, y: np.ndarray, stats: dict
) -> np.ndarray:
    """The run's own confusion_matrix.csv; recomputed on the test set when the artifact is absent."""
    n = len(stats["classes"])
    with tempfile.TemporaryDirectory() as tmp:
        path = download(client, trained.run_id, "confusion_matrix.csv", Path(tmp))
        if path is not None:
            try:
                cm = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, n + 1), dtype=np.int64, ndmin=2)
            except ValueError as e:  # a damaged file: recomputed below
                log.warning("run %s: its confusion_matrix.csv artifact is damaged (%s); recomputing it",
                            trained.run_id, str(e).splitlines()[0][:100] if str(e) else type(e).__name__)
                cm = None
            if cm is not None and cm.shape == (n, n):
                return cm
    pred = trained.predict(x, stats).numpy()
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y, dtype=np.int64), pred), 1)
    return cm
