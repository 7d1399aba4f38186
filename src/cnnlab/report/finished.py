"""A finished study's answers as DataFrames, in one call: what a notebook shows inline.

    import cnnlab.report
    study = cnnlab.report.load("results/quick")   # a study's folder, as the workflow writes it
    study.claims                                  # claims.csv: effect, interval and verdict per claim
    study.summary                                 # summary.csv: one row per variant
    study.runs                                    # every training run, from MLflow (mlflow.search_runs)
    study.figure("claims_forest")                 # the path of one of the report's pictures
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cnnlab.errors import UserError


@dataclass
class FinishedStudy:
    name: str
    folder: Path  # results/<study>
    report: Path  # results/<study>/report/report.html
    summary: pd.DataFrame
    claims: pd.DataFrame
    tracking_uri: str

    @property
    def runs(self) -> pd.DataFrame:
        """Every training run of the study in the MLflow store: params, metrics and tags as columns."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.search_runs(experiment_names=[self.name], filter_string="tags.`cnnlab.kind` = 'train'")

    def figure(self, name: str) -> Path:
        """The path of one of the report's pictures (its registry name, e.g. claims_forest, ablation)."""
        path = self.report.parent / f"{name}.png"
        if not path.is_file():
            shown = ", ".join(sorted(p.stem for p in self.report.parent.glob("*.png")))
            raise UserError(f"The report of '{self.name}' has no figure '{name}'; it has: {shown}.")
        return path


def load(folder: str | Path, tracking_uri: str | None = None) -> FinishedStudy:
    """The finished study in `folder` (results/<study>): its summary, claims and runs.

    tracking_uri: the MLflow store its runs are in; by default the workflow's own, results/mlflow.db
    beside the study's folder.
    """
    folder = Path(folder)
    report = folder / "report"
    missing = [n for n in ("summary.csv", "claims.csv", "report.html") if not (report / n).is_file()]
    if missing:
        raise UserError(f"{folder} holds no finished study ({', '.join(missing)} missing under {report}); pass a "
                        "study's folder, results/<study>, after its workflow has finished.")
    uri = tracking_uri or f"sqlite:///{(folder.parent / 'mlflow.db').resolve()}"
    return FinishedStudy(name=folder.name, folder=folder, report=report / "report.html",
                         summary=pd.read_csv(report / "summary.csv"), claims=pd.read_csv(report / "claims.csv"),
                         tracking_uri=uri)
