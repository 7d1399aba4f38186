"""What the README and docs/ tell a user holds for this checkout: the results block is the record's,
the config keys they name exist, the variant counts they state are the studies', the lecture's
Portuguese labels carry one gloss everywhere, and each `snakemake ... --config ...` line of the
README plans as written (a dry run in a copy of the workflow)."""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig

from bench.results_table import BEGIN, END, PICTURES, RESULTS, block, picture_digest, record_digest, rendered_readme
from cnnlab.report import claims as claim_rules
from cnnlab.report import registry
from cnnlab.study.studies import compose_config, load_study
from tests.helpers import REPO, SNAKEMAKE, copy_workflow, run

README = REPO / "README.md"
# User docs: the README and docs/*.md. docs/dev/ holds the developers' notebooks (notes.md, the figures
# behind the code's choices; history.md, a dated record of past commits), not held to this checkout.
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
CONF = REPO / "conf"
STUDIES = sorted(p.stem for p in (CONF / "study").glob("*.yaml"))


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# -- the results block ------------------------------------------------------------------------


def test_the_readme_results_block_is_the_rendering_of_the_recorded_cpu_study():
    readme = text(README)
    assert readme == rendered_readme(readme, RESULTS), (
        "README.md's results block differs from docs/results/cpu.json: run `python -m bench.results_table render`."
    )


def test_the_readmes_pictures_are_drawn_from_the_record_as_it_is_now():
    # Each picture carries the digest of the record it was drawn from: a new record with old pictures fails.
    digest = record_digest(RESULTS / "cpu.json")
    for name in PICTURES.values():
        png = RESULTS / name
        assert picture_digest(png) == digest, f"{name} is stale: run `python -m bench.results_table render`"
        assert png.stat().st_size <= 200_000, f"{name} is {png.stat().st_size:,} bytes"
        assert f"](docs/results/{name})" in text(README)


def test_no_recorded_verdict_is_stronger_after_adjustment_than_alone():
    record = json.loads((RESULTS / "cpu.json").read_text())
    for c in record["claims"]:
        for adjusted in (c["verdict"], c.get("holm_verdict") or c["verdict"]):
            assert claim_rules.weaker_or_equal(adjusted, c["unadjusted_verdict"]), (c["claim"], c["model"])


def test_the_record_follows_the_plan_the_study_file_holds_now():
    # A record made before a change of the plan would show verdicts the study no longer computes.
    from cnnlab.study.plan import plan, plan_hash

    record = json.loads((RESULTS / "cpu.json").read_text())
    assert record["plan_hash"] == plan_hash(plan(load_study("cpu")))


def test_the_dashboard_screenshot_shows_the_quick_studys_variants_as_they_are_now():
    # docs/dashboard.png records the variants it shows (tests/test_dashboard_browser.py makes it).
    from PIL import Image

    with Image.open(REPO / "docs" / "dashboard.png") as im:
        shown = set(im.info.get("Variants", "").split(","))
    assert shown == set(load_study("quick").variants), "docs/dashboard.png is stale: make it again (docs/dashboard.md)"


def test_a_changed_number_in_the_results_block_is_caught():
    readme = text(README)
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    figure = re.search(r"\| (\d+\.\d) ± ", block).group(1)  # the first accuracy of the table
    changed = readme.replace(f"| {figure} ± ", f"| {float(figure) + 1:.1f} ± ", 1)
    assert changed != readme and changed != rendered_readme(changed, RESULTS)


def test_the_recorded_study_was_adjusted_and_scored_as_its_study_file_says_now():
    record = json.loads((RESULTS / "cpu.json").read_text())
    report = load_study("cpu").report
    assert {c["adjustment"] for c in record["claims"] if c["n_seeds"] >= 2} == {report["adjustment"]}
    assert {c["delta"] for c in record["claims"]} == {report["smallest_effect_points"]}


def test_the_results_block_names_the_adjustment_and_delta_of_its_claims():
    claims = [{"claim": "c", "n_seeds": n, "verdict": "holds", "adjustment": "fdr_bh", "delta": 1.0}
              for n in (5, 5, 1)]
    rendered = block({"study": "s", "machine": "m", "commit": "c", "date": "d", "command": "x",
                      "wall_seconds": 60, "variants": [], "claims": claims})
    assert ("Verdicts adjusted over the family of 2 claims by Benjamini-Hochberg (false-discovery rate 5%); "
            "smallest effect of interest 1 point.") in rendered


# -- the README's shape, its links and its words ----------------------------------------------------


def test_the_readme_is_read_in_five_minutes():
    assert len(text(README).splitlines()) <= 300


def expect_box_figures(readme: str) -> list[str]:
    """The times and sizes of the README's "what to expect" box (its table's rows)."""
    rows = [line for line in readme.splitlines() if line.startswith("> | `")]
    return re.findall(r"\d+ min \d+ s|\d+(?:\.\d+)? [MG]B", "\n".join(rows))


def test_what_to_expect_quotes_the_benchmarks_current_rows():
    # The box repeats measured figures; docs/benchmarks.md is their one source.
    figures = expect_box_figures(text(README))
    assert len(figures) >= 6, figures
    benchmarks = text(REPO / "docs" / "benchmarks.md")
    missing = [f for f in figures if f not in benchmarks]
    assert not missing, f"the README's box quotes {missing}, which docs/benchmarks.md does not hold: update one of them"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", [*DOCS, REPO / "bench" / "README.md"], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_resolves(doc):
    for target in LINK.findall(text(doc)):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which is not there"


# What a user has: the project's pages speak of cnnlab and of machines a user could own, never of
# the machines and procedures its maintainers were lent.
NOT_A_USERS_WORDS = ("lent", "device tool", "per call", "give_back", "budget_left", "device time",
                     "the session's", "warm between calls", "carry=")


@pytest.mark.parametrize("doc", [*DOCS, *sorted((REPO / "bench").glob("*.md")), *sorted((REPO / "bench").glob("*.py"))],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_the_project_speaks_of_what_a_user_has(doc):
    words = text(doc).lower()
    found = [w for w in NOT_A_USERS_WORDS if re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", words)]
    assert not found, f"{doc.relative_to(REPO)} names {found}"


def test_every_benchmarks_table_is_well_formed():
    # Each row has as many cells as its header (a cell's own "|" is written "\|").
    table = []
    for line in [*text(REPO / "docs" / "benchmarks.md").splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            cells = [len(re.split(r"(?<!\\)\|", row.strip().strip("|"))) for row in table]
            assert len(set(cells)) == 1, f"a table of benchmarks.md has rows of {sorted(set(cells))} cells: {table[0]}"
            table = []


# -- config keys named in the docs ----------------------------------------------------------------


def _group_options() -> dict[str, list[str]]:
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in CONF.iterdir()
            if d.is_dir() and d.name not in ("study", "hydra")}


def _dotted(cfg, prefix: str = "") -> set[str]:
    keys = set()
    items = cfg.items() if isinstance(cfg, DictConfig) else []
    for k, v in items:
        key = f"{prefix}{k}"
        keys.add(key)
        if isinstance(v, DictConfig):
            keys |= _dotted(v, key + ".")
    return keys


@cache
def known_keys() -> frozenset[str]:
    """Every dotted key of the composed config, under each option of each group."""
    keys = _dotted(compose_config())
    for group, options in _group_options().items():
        for option in options:
            cfg = compose_config([f"{group}={option}"])
            keys |= _dotted(cfg)
    return frozenset(keys)


def top_level_groups() -> set[str]:
    return {k.split(".")[0] for k in known_keys()}


KEY = r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+"


def keys_named(doc: str, groups: set[str]) -> set[str]:
    """`group.key` in backticks, and group.key= anywhere (command lines, overrides)."""
    found = set(re.findall(rf"`({KEY})(?:=[^`]*)?`", doc)) | set(re.findall(rf"(?<![\w./:-])({KEY})=", doc))
    return {k for k in found if k.split(".")[0] in groups}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_config_keys_named_in_the_docs_exist(doc):
    named = keys_named(text(doc), top_level_groups())
    missing = sorted(named - known_keys())
    assert not missing, f"{doc.name} names settings that no composed config has: {missing}"


def test_an_unknown_key_is_caught():
    assert keys_named("set `optimizer.lookahead_every=5` or trainer.precison=auto", top_level_groups()) - known_keys() \
        == {"optimizer.lookahead_every", "trainer.precison"}


def test_the_docs_name_real_settings():
    # a sanity check on the extraction: the user docs do name these, and they exist
    named = set().union(*(keys_named(text(doc), top_level_groups()) for doc in DOCS))
    assert {"trainer.precision", "lookahead.every", "trainer.eval_batch_size", "tracking.retry_s"} <= named


def workflow_config() -> dict:
    return yaml.safe_load(text(REPO / "workflow" / "config.yaml"))


# -- variant counts -------------------------------------------------------------------------------


@cache
def variant_count(study: str) -> int:
    return len(load_study(study).variants)


def stated_counts(doc: str) -> list[tuple[int, list[str], str]]:
    """(N, studies named on the same line, the line) for each 'N variants' of a line naming a study."""
    out = []
    for line in doc.splitlines():
        named = [s for s in STUDIES if re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", line)]
        for n in re.findall(r"\b(\d+) variants\b", line):
            if named:
                out.append((int(n), named, line.strip()))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_variant_counts_in_the_docs_are_the_studies(doc):
    wrong = [(n, line) for n, named, line in stated_counts(text(doc))
             if all(variant_count(s) != n for s in named)]
    assert not wrong, f"{doc.name} states variant counts that no study it names has: {wrong}"


def test_a_wrong_variant_count_is_caught():
    wrong = variant_count("lecture") - 1
    [(n, named, _)] = stated_counts(f"| `lecture` | MLP and CNN: {wrong} variants × 3 seeds |")
    assert n == wrong and named and all(variant_count(s) != n for s in named)


# -- the lecture's Portuguese labels ----------------------------------------------------------------

GLOSSES = {
    "Problema 1": "high dimensionality",
    "Problema 2": "sensitivity to position and scale",
    "Filtros e convoluções": "filters and convolutions",
}


def gloss_mismatches(doc: str) -> list[str]:
    """Each label followed by a colon or a bracket must carry its one gloss, after a colon."""
    bad = []
    for label, gloss in GLOSSES.items():
        for m in re.finditer(rf"{re.escape(label)}\s*([:(])\s*", doc):
            if m.group(1) != ":" or not doc[m.end():].replace("\n", " ").startswith(gloss):
                bad.append(doc[m.start(): m.end() + 40].replace("\n", " "))
    return bad


def report_texts() -> list[str]:
    return [s.title for s in registry.sections()] + [f.caption for f in registry.figures()]


def test_the_report_titles_the_lectures_sections_with_their_glosses():
    titles = {s.title for s in registry.sections()}
    for label, gloss in GLOSSES.items():
        assert any(t.startswith(f"{label}: {gloss}") for t in titles), (label, sorted(titles))


@pytest.mark.parametrize("where", ["README.md", "workflow/report", "the report's titles and captions"])
def test_the_lectures_labels_carry_one_gloss(where):
    if where == "README.md":
        docs = [text(README)]
        for label, gloss in GLOSSES.items():  # glossed at least once where the README uses the label
            assert label not in docs[0] or f"{label}: {gloss}" in docs[0], label
    elif where == "workflow/report":
        docs = [text(p) for p in sorted((REPO / "workflow" / "report").glob("*.rst"))]
        for doc in docs:
            for label, gloss in GLOSSES.items():
                assert label not in doc or f"{label}: {gloss}" in doc.replace("\n", " "), label
    else:
        docs = report_texts()
    bad = [b for doc in docs for b in gloss_mismatches(doc)]
    assert not bad, f"{where}: a label with another gloss: {bad}"


def test_another_gloss_is_caught():
    assert gloss_mismatches("Problema 2 (position and scale): accuracy kept")
    assert gloss_mismatches("Problema 1: parameters against accuracy")
    assert not gloss_mismatches("Problema 2: sensitivity to position and scale. Accuracy kept")


# -- the README's snakemake command lines -----------------------------------------------------------


def command_lines(doc: str) -> list[str]:
    """Every `snakemake ... --config ...` command of a markdown text: code-block lines (continuations
    joined, comments dropped) and inline code outside code blocks."""
    commands, prose, block, fenced = [], [], [], False
    for line in doc.splitlines():
        if line.startswith("```"):
            if fenced:
                for joined in "\n".join(block).replace("\\\n", " ").splitlines():
                    joined = joined.split(" #", 1)[0].strip()
                    if joined.startswith("snakemake "):
                        commands.append(joined)
                block = []
            fenced = not fenced
        elif fenced:
            block.append(line)
        else:
            prose.append(line)
    commands += re.findall(r"`(snakemake [^`]+)`", "\n".join(prose))
    return list(dict.fromkeys(" ".join(c.split()) for c in commands if " --config " in c))


STAND_IN = "stand-in-cifar-10-binary.tar.gz"


def runnable(command: str, folder: Path) -> list[str]:
    """The command as a dry run in folder: placeholders (`<...>`, `...`, /abs/path) become a stand-in
    archive and its checksum; `--report FILE` is dropped (it needs a finished study)."""
    archive = folder / STAND_IN
    archive.write_bytes(b"a stand-in archive: a dry run never reads it")
    args = shlex.split(command.replace("<", "'<").replace(">", ">'"))
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--report":
            skip = True
            continue
        key, _, value = a.partition("=")
        if key == "data_url" and ("<" in value or "..." in value or "/abs/path/" in value):
            a = f"data_url=file://{archive}"
        elif key == "data_md5" and ("<" in value or "..." in value):
            a = "data_md5=0123456789abcdef0123456789abcdef"
        elif "<" in a or a.endswith("..."):
            raise AssertionError(f"a placeholder the test cannot stand in for: {a!r} in {command!r}")
        out.append(a)
    return [SNAKEMAKE, "-n", *out[1:]]


README_COMMANDS = command_lines(text(README))


def test_the_readme_has_snakemake_command_lines():
    assert any("study=smoke" in c for c in README_COMMANDS), README_COMMANDS
    assert any("--workflow-profile workflow/profiles/slurm" in c for c in README_COMMANDS), README_COMMANDS


def test_config_keys_of_the_readme_commands_are_the_workflows():
    keys = set(workflow_config())
    for command in README_COMMANDS:
        words = command.split()
        given = words[words.index("--config") + 1:]
        given = [w for w in given if "=" in w and not w.startswith("-")]
        unknown = [w.split("=")[0] for w in given if w.split("=")[0] not in keys]
        assert not unknown, f"{command!r} sets keys workflow/config.yaml lacks: {unknown}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("docs-wf"))


@pytest.mark.slow  # a snakemake dry run each
@pytest.mark.parametrize("command", README_COMMANDS)
def test_each_readme_snakemake_line_plans_as_written(workdir, command, monkeypatch):
    monkeypatch.delenv("CNNLAB_AUTO_STUDY", raising=False)
    proc = run(runnable(command, workdir), cwd=workdir, env={"CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.slow  # a snakemake dry run each
def test_a_readme_line_that_does_not_plan_fails(workdir):
    proc = run(runnable("snakemake --cores 1 --config study=no_such_study", workdir), cwd=workdir,
               env={"CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode != 0
