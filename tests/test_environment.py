"""environment.yml (conda, for clusters) and pyproject.toml ask for the same packages."""

import re
import tomllib

import yaml

from tests.helpers import REPO

# conda-forge names of PyPI packages where they differ
CONDA_NAMES = {"torch": "pytorch"}


def _split(spec: str) -> tuple[str, str]:
    name, constraint = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec.strip()).groups()
    return name.lower(), constraint.replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(s) for s in project["dependencies"] + project["optional-dependencies"]["slurm"])
    wanted = {CONDA_NAMES.get(k, k): v for k, v in wanted.items()}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = dict(_split(d) for d in env["dependencies"] if isinstance(d, str) and not d.startswith(("python", "pip")))
    assert conda == wanted
    pip_part = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_part == ["-e ."]  # the package itself, its dependencies already satisfied by conda
    assert re.match(r"python>=3\.11", next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")))
