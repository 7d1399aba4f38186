"""How the study was made: commits, data checksum, devices, versions, time, the study file."""

import math
import time
from collections import Counter
from pathlib import Path

from cnnlab.report import html
from cnnlab.report.registry import section
from cnnlab.report.runs import FINISHED

PROVENANCE_TAGS = ("torch_version", "lightning_version", "cnnlab_version", "python_version")


def precisions(records) -> Counter:
    """Each family's precision as its runs logged it (cnnlab.study.precision), and what chose it."""
    def line(r) -> str:
        p = r.params
        if "precision_resolved" not in p:
            return f"{r.tags.get('model', '?')}: {p.get('trainer.precision', '?')} (not recorded)"
        speedup = p.get("precision_bf16_speedup", "not measured")
        measured = f": {speedup}x fp32's images/s" if speedup != "not measured" else ""
        return f"{r.tags.get('model', '?')}: {p['precision_resolved']} ({p.get('precision_chosen_by', '?')}{measured})"

    return Counter(sorted(line(r) for r in records))


@section("provenance", "How it was made", order=90)
def render(ctx) -> list[str]:
    ran = [r for r in ctx.records if r.run_id]

    def count(key):
        return Counter(r.tags.get(key, "?") for r in ran)

    commits = Counter(f"{r.tags.get('git_commit', '?')[:12]} (dirty: {r.tags.get('git_dirty', '?')})" for r in ran)
    rows = [{"what": "commit", "value": ", ".join(f"{k} x{n}" for k, n in commits.items())}]
    for key in ("data_md5", "device", *PROVENANCE_TAGS):
        rows.append({"what": key, "value": ", ".join(f"{k} x{n}" for k, n in count(key).items())})
    rows.append({"what": "precision", "value": ", ".join(f"{k} x{n}" for k, n in precisions(ran).items())})
    seconds = sum(
        r.metric("job_seconds") for r in ran if r.state == FINISHED and not math.isnan(r.metric("job_seconds"))
    )
    finished = sum(r.state == FINISHED for r in ran)
    rows.append(
        {
            "what": "total training time",
            "value": f"{seconds / 3600:.2f} h ({seconds:,.0f} s) over {finished} finished runs",
        }
    )
    rows.append({"what": "report built", "value": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    chain = " extends ".join((ctx.study.name, *ctx.study.extends))
    files = [Path(ctx.conf_dir) / "study" / f"{name}.yaml" for name in (ctx.study.name, *ctx.study.extends)]
    parts = [
        html.paragraph("x N: how many runs share the value."),
        html.table(rows, text_columns=("what", "value")),
        html.paragraph(f"Study: {chain}.", "note"),
    ]
    for f in files:
        parts += [f"<h3>Study file {html.escape(f.name)}</h3>",
                  html.preformatted(f.read_text() if f.is_file() else "(study file not found)")]
    return parts
