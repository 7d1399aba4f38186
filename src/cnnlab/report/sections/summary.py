"""The summary table: every variant's numbers over its seeds, and the runs that did not finish."""

from cnnlab.report import html
from cnnlab.report.registry import section
from cnnlab.report.runs import FINISHED
from cnnlab.report.summary import display_rows


@section("summary", "Summary", order=10)
def render(ctx) -> list[str]:
    classes = [s if s != "ok" else "" for s in ctx.table.status]
    problems = [
        {"variant": r.variant, "seed": r.seed, "state": r.state, "error": r.error}
        for r in ctx.records
        if r.state != FINISHED
    ]
    parts = [
        html.table(display_rows(ctx.table), classes, text_columns=("variant", "model", "adds", "status")),
        html.paragraph(
            "Test accuracy: mean ± sample standard deviation (ddof=1) over the finished seeds; 0 when one seed "
            "finished. Train - val: the last epoch's accuracy on a fixed set of training images minus on the "
            "validation images, both in eval mode; a large gap is overfitting that regularization can fight. "
            "Training time: the job's wall time (training and testing); images/s: the last epoch's training "
            "throughput.",
            "note",
        ),
    ]
    if problems:
        parts += [
            "<h3>Runs that did not finish</h3>",
            html.table(problems, [p["state"] for p in problems], ("variant", "state", "error")),
        ]
    return parts
