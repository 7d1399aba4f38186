"""What every section and figure of the report reads: the study, its runs, the best networks, the test set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from cnnlab.report.runs import RunRecord
from cnnlab.study.studies import Study


@dataclass
class ReportContext:
    study: Study
    conf_dir: Path
    out: Path
    client: object  # MlflowClient
    records: list[RunRecord]
    table: pd.DataFrame  # the summary, one row per variant
    nets: dict  # architecture ("dense", "convolutional") -> the best TrainedNet of that side
    x_test: torch.Tensor  # (N, 3, 32, 32) uint8
    y_test: torch.Tensor  # (N,) int64
    stats: dict  # the prepared data's statistics and class names
    notes: dict[str, str] = field(default_factory=dict)  # figure -> why it is unavailable
    clipped: list[str] = field(default_factory=list)  # figures whose text reached past their canvas
    _memo: dict = field(default_factory=dict)

    def memo(self, key: str, compute: Callable):
        """compute() once per report: a section's text and its figure share what they derive."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def net_label(self, architecture: str) -> str:
        trained = self.nets[architecture]
        return f"{trained.family.upper()} {trained.label}"
