"""The folder of one run: checkpoints, the resume state, the final result (Snakemake's output)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from cnnlab.atomic import clear_leftovers, keep_newest, write_text
from cnnlab.training.checkpoint import resumable

log = logging.getLogger(__name__)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.artifacts = self.path / "artifacts"
        self.config_file = self.path / "config.yaml"
        self.state_file = self.path / "state.json"
        self.result_file = self.path / "result.json"
        self.precision_file = self.path / "precision.json"  # the precision it trains in, and why

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, **state) -> None:
        write_text(self.state_file, json.dumps(state, indent=2) + "\n")

    def save_result(self, result: dict) -> None:
        write_text(self.result_file, json.dumps(result, indent=2) + "\n")

    def clear_leftovers(self) -> None:
        """As a run starts: temporary files a killed job left, and all but the newest folder of checkpoints
        set aside and the newest damaged copy of each checkpoint."""
        clear_leftovers(self.path, [self.state_file.name, self.result_file.name, self.config_file.name,
                                    self.precision_file.name])
        keep_newest(self.path.glob("checkpoints.stale-*"))
        for name in ("last.ckpt", "best.ckpt"):
            keep_newest(self.checkpoints.glob(f"{name}.damaged-*"))

    def resume_checkpoint(self, fp: str) -> Path | None:
        """The checkpoint to resume from: last.ckpt when it was written under the same config
        fingerprint and is intact, else best.ckpt when that is; None to start afresh.

        A damaged checkpoint is moved aside (never deleted, never loaded), with a warning.
        """
        last = self.checkpoints / "last.ckpt"
        if not last.is_file():
            return None
        if self.state().get("fingerprint") != fp:
            # Written under another config: keep it aside (nothing is lost) and start afresh.
            stale = self.path / f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}"
            self.checkpoints.rename(stale)
            log.warning("checkpoints were made with another config; moved to %s", stale)
            keep_newest(self.path.glob("checkpoints.stale-*"))
            return None
        for candidate in (last, self.checkpoints / "best.ckpt"):
            if not candidate.is_file():
                continue
            problem = resumable(candidate)
            if problem is None:
                if candidate != last:
                    log.warning("resuming from %s, the last intact checkpoint (its later epochs are trained again)",
                                candidate)
                return candidate
            aside = candidate.with_name(f"{candidate.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            candidate.rename(aside)
            log.warning("checkpoint %s is damaged (%s); moved it to %s", candidate, problem, aside)
        log.warning("no intact checkpoint in %s: training starts again from the first epoch", self.checkpoints)
        return None
