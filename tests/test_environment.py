"""pyproject.toml and environment.yml declare what cnnlab imports, from sources that publish it.

No conda solver runs here. py-rattler (a conda solver) installs from PyPI, but solving needs each
channel's repodata from conda.anaconda.org, which these machines cannot reach (only a PyPI mirror
is). So which channel publishes each conda package, and a version seen there, come from
tests/data/conda_channels.yaml, a record naming the page or recipe each fact was read from.
"""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
import yaml

from tests.helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
ENV = yaml.safe_load((REPO / "environment.yml").read_text())
RECORD = yaml.safe_load((REPO / "tests" / "data" / "conda_channels.yaml").read_text())

# conda-forge names of PyPI packages where they differ
CONDA_NAMES = {"torch": "pytorch"}
# bioconda's setup guide (https://bioconda.github.io): conda-forge above bioconda, strict priority;
# nodefaults keeps Anaconda's defaults channel out.
CHANNELS = ["conda-forge", "bioconda", "nodefaults"]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(spec: str) -> tuple[str, list[str], str]:
    """'name[extra,...]>=1,<2' -> (normalized name, extras, '>=1,<2')."""
    name, extras, constraint = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[([^\]]*)\])?\s*(.*)", spec).groups()
    return _normalize(name), [e.strip() for e in (extras or "").split(",") if e.strip()], constraint.replace(" ", "")


def _extra(name: str) -> list[str]:
    """The requirements of an extra, with cnnlab[...] self-references expanded."""
    specs = []
    for spec in PROJECT["optional-dependencies"][name]:
        dist, extras, _ = _requirement(spec)
        specs += [s for e in extras for s in _extra(e)] if dist == "cnnlab" else [spec]
    return specs


def _constraints(specs) -> dict[str, str]:
    """name -> constraint, e.g. {'numpy': '>=1.26'}."""
    return {name: constraint for name, _, constraint in map(_requirement, specs)}


def _conda_specs() -> dict[str, str]:
    """environment.yml's conda packages (pip's own list aside): name -> constraint."""
    return _constraints(d for d in ENV["dependencies"] if isinstance(d, str))


def _version(text: str) -> tuple[int, ...]:
    assert re.fullmatch(r"\d+(\.\d+)*", text), f"{text!r} is not a plain numeric version"
    return tuple(int(part) for part in text.split("."))


def _at_least(version: tuple[int, ...], bound: tuple[int, ...]) -> bool:
    width = max(len(version), len(bound))
    return version + (0,) * (width - len(version)) >= bound + (0,) * (width - len(bound))


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    wanted = _constraints(PROJECT["dependencies"] + _extra("slurm"))
    wanted = {CONDA_NAMES.get(k, k): v for k, v in wanted.items()}
    conda = _conda_specs()
    assert conda.pop("python") == PROJECT["requires-python"]
    assert conda.pop("pip") == ""
    assert conda == wanted
    # No pip part: Snakemake builds the environment from a copy, where a path to the checkout
    # would point elsewhere; environment.post-deploy.sh installs the package itself.
    assert all(isinstance(d, str) for d in ENV["dependencies"])


def test_environment_yml_uses_the_channel_order_bioconda_asks_for():
    assert ENV["channels"] == CHANNELS


def test_each_conda_package_comes_from_a_channel_that_publishes_it():
    conda = _conda_specs()
    assert set(RECORD) == set(conda), (
        f"tests/data/conda_channels.yaml and environment.yml disagree: only in the record "
        f"{sorted(set(RECORD) - set(conda))}, only in environment.yml {sorted(set(conda) - set(RECORD))}")
    for name, constraint in conda.items():
        fact = RECORD[name]
        assert fact.get("source"), f"{name}: the record says where its channel was read from"
        # Under strict priority conda takes a package from the first listed channel that has it.
        channel = next((c for c in ENV["channels"] if c in fact["channels"]), None)
        assert channel, f"{name} is published on {fact['channels']}, none of environment.yml's {ENV['channels']}"
        lower = re.search(r">=([\d.]+)", constraint)
        if lower:
            assert "seen" in fact, f"{name}: the record names no version seen on {channel}"
            assert _at_least(_version(str(fact["seen"])), _version(lower[1])), (
                f"environment.yml asks for {name}{constraint}, but the newest {name} seen on {channel} "
                f"is {fact['seen']}; lower the bound or update the record from {fact['source']}")


def _imports(path) -> set[str]:
    """Top-level modules a file imports, leaving out those guarded by `except ImportError`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_everything_the_code_imports_is_declared():
    runtime = {_requirement(s)[0] for s in PROJECT["dependencies"]}
    declared_for = {  # folder -> what an installation for it provides
        "src": runtime,
        "workflow/scripts": runtime,
        "bench": runtime | {_requirement(s)[0] for s in _extra("bench")},
        "tests": runtime | {_requirement(s)[0] for s in _extra("test")},
    }
    first_party = {"cnnlab", "tests", "bench"}
    providers = importlib.metadata.packages_distributions()
    missing = {}  # (folder, module) -> first file importing it
    for folder, declared in declared_for.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            for module in _imports(path) - set(sys.stdlib_module_names) - first_party:
                if not {_normalize(d) for d in providers.get(module, [])} & declared:
                    missing.setdefault((folder, module), path.relative_to(REPO))
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(
        f"{module} (first in {path}; installed by {providers.get(module, 'nothing')})"
        for (_, module), path in sorted(missing.items()))


def test_the_version_is_written_once():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cnnlab.__version__"}


def test_the_wheel_holds_the_package_its_version_and_license(tmp_path):
    # Built from a copy, so the checkout gets no build/ or egg-info; the environment's setuptools
    # (the test extra asks for the build-system's) builds it without a network.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("cnnlab-*.whl")

    version = ast.literal_eval(next(
        node.value for node in ast.parse((REPO / "src/cnnlab/__init__.py").read_text()).body
        if isinstance(node, ast.Assign) and node.targets[0].id == "__version__"))
    info = f"cnnlab-{version}.dist-info"
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"{info}/METADATA").decode()
        license_text = whl.read(f"{info}/licenses/LICENSE").decode()
    package = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src/cnnlab").rglob("*.py")}
    assert {n for n in names if not n.startswith(info + "/")} == package
    headers = dict(line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines() if ": " in line)
    assert headers["Version"] == version
    assert headers["License-Expression"] == "MIT"
    assert headers["License-File"] == "LICENSE"
    assert license_text == (REPO / "LICENSE").read_text()


@pytest.mark.slow
def test_the_post_deploy_script_installs_this_checkout_into_the_new_environment(tmp_path):
    """What `snakemake --use-conda` does after building environment.yml: it runs the script from a
    copy under .snakemake/conda/, inside the new environment, with the workflow's environment
    variables; the jobs' interpreter then imports this checkout's cnnlab. A virtual environment
    stands in for the conda one (no conda solver runs here)."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    copy = tmp_path / ".snakemake" / "conda" / "0123abcd.post-deploy.sh"
    copy.parent.mkdir(parents=True)
    shutil.copy(REPO / "environment.post-deploy.sh", copy)
    activated = {**os.environ, "PATH": f"{env / 'bin'}{os.pathsep}{os.environ['PATH']}", "CNNLAB_CHECKOUT": str(REPO)}
    activated.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(copy)], cwd=tmp_path, env=activated, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    where = subprocess.run([str(env / "bin" / "python"), "-c", "import cnnlab; print(cnnlab.__file__)"],
                           cwd=tmp_path, env=activated, capture_output=True, text=True)
    assert where.stdout.strip() == str(REPO / "src" / "cnnlab" / "__init__.py"), where.stderr


def test_the_post_deploy_script_says_what_it_needs_without_the_workflow(tmp_path):
    """Run outside the workflow (CNNLAB_CHECKOUT unset), it stops with one sentence and installs nothing."""
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_CHECKOUT"}
    proc = subprocess.run(["bash", str(REPO / "environment.post-deploy.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "CNNLAB_CHECKOUT" in proc.stderr and "workflow/rules/common.smk" in proc.stderr
