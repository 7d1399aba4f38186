"""The folder of one run: checkpoints, the resume state, the final result (Snakemake's output)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from cnnlab.atomic import write_text

log = logging.getLogger(__name__)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.artifacts = self.path / "artifacts"
        self.config_file = self.path / "config.yaml"
        self.state_file = self.path / "state.json"
        self.result_file = self.path / "result.json"

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, **state) -> None:
        write_text(self.state_file, json.dumps(state, indent=2) + "\n")

    def save_result(self, result: dict) -> None:
        write_text(self.result_file, json.dumps(result, indent=2) + "\n")

    def resume_checkpoint(self, fp: str) -> Path | None:
        """last.ckpt when it was written under the same config fingerprint, else None."""
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
