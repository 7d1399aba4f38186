"""An offline kit for a GPU machine without network access: the wheels it lacks and CIFAR-10 in parts.

    python3 bench/gpu_kit.py                          # .gpukit/wheels (Python 3.12) and .gpukit/data
    python3 bench/gpu_kit.py --limit-mib 100          # parts sized for transfers of at most 100 MiB
    python3 bench/gpu_kit.py --plan-bytes 173802735   # the transfers for an archive of that size, no data
    python3 bench/gpu_kit.py --python-version 3.11 --kit DIR --archive tiny.tar.gz   # the CPU rehearsal

Run where pip reaches PyPI; copy the kit to the GPU machine in transfers of at most --limit-mib
each, the checkout with each (bench/README.md):

- wheels: what cnnlab needs (pyproject.toml's dependencies) that the machine lacks
  (bench/device_packages.txt), with their own needs, for CPython on manylinux x86_64, resolved by
  pip against PyPI. Left out: what the machine has (except the versions pinned below), what only
  MLflow's UI server or Snakemake's optional solver use, and mlflow-skinny and mlflow-tracing, whose
  files the full mlflow wheel already holds. `connection_pool` and `antlr4-python3-runtime` have no
  wheels on PyPI: they are built here (pure Python). `kit.json` beside the wheels lists all of it.
- data: the archive, checked against its MD5, cut into byte parts named
  `<archive>.<md5>.part<k>of<n>`, sized so that each transfer holds at most BUDGET_MIB with the
  working tree; the first also holds the wheels. The GPU machine rebuilds and checks it
  (bench/gpu_check.py).

Prints each transfer's size, what it holds and the command to run after it; fails if a transfer
would hold more than --limit-mib.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / ".gpukit"
DEVICE_PACKAGES = Path(__file__).with_name("device_packages.txt")
MIRROR = REPO.parent / "shared" / "data" / "cifar10" / "cifar-10-binary.tar.gz"
MIRROR_MD5 = "e7e97d82bba59a97f7458a4485924275"
MIB = 2**20
LIMIT_MIB = 60  # the default most one transfer may hold (the working tree, wheels and one part together)
BUDGET_MIB = 58  # what the parts are sized to fill
PART_MIB = 55
DEVICE_PYTHON = "3.12"  # the GPU machine's python3 the kit is built for by default (--python-version)
# pip matches manylinux tags exactly; a machine with Ubuntu 24.04's glibc and Python 3.12 runs all of these.
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64"]
# No wheel on PyPI: built here with `pip wheel --no-deps`, at the versions their users require.
BUILT = ["connection_pool", "antlr4-python3-runtime==4.9.*"]  # hydra-core 1.3 requires 4.9.*
# Carried although the device has them: the versions there may be ones the kit refuses.
PINNED = {
    "packaging": "Snakemake refuses packaging 26",
    "typing-extensions": "import mlflow fails with typing_extensions < 4.14",
}
LEFT_OUT = {
    "pulp": "Snakemake's optional solver (16 MiB); it falls back to its greedy scheduler",
    "flask": "MLflow's UI server only",
    "flask-cors": "MLflow's UI server only",
    "gunicorn": "MLflow's UI server only",
    "graphene": "MLflow's UI server only",
    "docker": "MLflow's model serving only",
    "huey": "MLflow's UI server's job queue only",
}
CONTAINED = {  # their dependencies are carried, their files are in the mlflow wheel
    "mlflow-skinny": "its files are in the mlflow wheel",
    "mlflow-tracing": "its files are in the mlflow wheel",
}
PART_MARK = ".part"


class KitError(Exception):
    """A problem the user can fix; printed as one sentence."""


def device_packages(path: Path = DEVICE_PACKAGES) -> dict[str, str | None]:
    """{normalized name: version or None} of the packages the GPU machine already has."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version or None
    return found


def kit_roots(device: dict[str, str | None]) -> list[str]:
    """pyproject.toml's dependencies that the device lacks, as requirement strings."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [r for r in project["dependencies"] if canonicalize_name(Requirement(r).name) not in device]


def pip(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise KitError(f"pip {args[0]} failed (is PyPI reachable from here?):\n{proc.stderr[-3000:]}")


def target_args(python_version: str) -> list[str]:
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    return ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp", *platforms]


def resolve(roots: list[str], python_version: str, built: Path, scratch: Path) -> dict:
    """pip's resolution of the roots for the target Python (metadata only, no wheels fetched)."""
    report = scratch / "resolution.json"
    pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), "--target",
        str(scratch / "target"), "--find-links", str(built), *target_args(python_version), *roots)
    return json.loads(report.read_text())


def choose(report: dict, roots: list[str], device: dict[str, str | None], python_version: str):
    """(carried {name: version}, device requirements {name: specifiers}, left out {name: why})."""
    by_name = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
    env = default_environment()
    env.update(python_version=python_version, python_full_version=f"{python_version}.0", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    carried, needs, left_out, seen = {}, {}, {}, set()
    queue = [Requirement(r) for r in roots]
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        if name in LEFT_OUT:
            left_out[name] = LEFT_OUT[name]
            continue
        if name in device and name not in PINNED:
            needs.setdefault(name, set()).add(str(req.specifier))
            continue
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        meta = by_name[name]
        if name in CONTAINED:
            left_out[name] = CONTAINED[name]
        else:
            carried[name] = meta["version"]
        for text in meta.get("requires_dist", []):
            child = Requirement(text)
            extras = req.extras or {""}
            if child.marker is None or any(child.marker.evaluate({**env, "extra": e}) for e in extras):
                queue.append(child)
    merged = {n: str(SpecifierSet(",".join(s for s in specs if s))) for n, specs in sorted(needs.items())}
    return carried, merged, left_out


def build_wheels(kit: Path, python_version: str) -> dict:
    """The wheel kit in kit/wheels, with kit.json; returns kit.json's content."""
    wheels = kit / "wheels"
    device = device_packages()
    roots = kit_roots(device)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        built = scratch / "built"
        pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(built), *BUILT)
        report = resolve(roots, python_version, built, scratch)
        carried, needs, left_out = choose(report, roots, device, python_version)
        fresh = scratch / "wheels"  # the old kit is replaced only by a complete new one
        pip("download", "--quiet", "--no-deps", "--dest", str(fresh), "--find-links", str(built),
            *target_args(python_version), *(f"{n}=={v}" for n, v in sorted(carried.items())))
        files = sorted(fresh.glob("*.whl"))
        names = {canonicalize_name(f.name.split("-")[0]) for f in files}
        if len(files) != len(carried) or names != set(carried):
            raise KitError(f"pip downloaded {len(files)} wheels for {len(carried)} packages; expected one each")
        wheels.mkdir(parents=True, exist_ok=True)
        for old in wheels.iterdir():
            old.unlink()
        for f in files:
            f.rename(wheels / f.name)
    info = {
        "python": python_version,
        "platforms": PLATFORMS,
        "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git_commit(),
        "roots": roots,
        "wheels": [{"file": f.name, "bytes": f.stat().st_size} for f in sorted(wheels.glob("*.whl"))],
        "left_out": dict(sorted(left_out.items())),
        "pinned": PINNED,
        "device_requirements": needs,
    }
    (wheels / "kit.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return proc.stdout.strip() or "unknown"


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what travels with every call: tracked and untracked-not-ignored files, and shared/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, cwd=repo, check=True).stdout.decode().split("\0")
    paths = {repo / p for p in listed if p}
    shared = repo / "shared"
    if shared.is_dir():
        paths.update(p for p in shared.rglob("*") if not p.is_dir())
    return sum(p.lstat().st_size for p in paths if p.exists() or p.is_symlink())


def part_sizes(data_bytes: int, tree: int, wheels: int, part_mib: float = PART_MIB) -> list[int]:
    """Bytes of each part: call 1 carries the wheels and part 1, each later call one part."""
    sizes, left, first = [], data_bytes, True
    while left > 0:
        room = BUDGET_MIB * MIB - tree - (wheels if first else 0)
        if room < min(MIB, part_mib * MIB):
            if not first:
                raise KitError(f"the working tree ({tree / MIB:.1f} MiB) leaves no room for data in a call; "
                               "ignore or remove large files in the checkout")
            size = 0  # call 1 carries only the wheels
        else:
            size = int(min(part_mib * MIB, room, left))
        sizes.append(size)
        left -= size
        first = False
    return sizes


def split_archive(archive: Path, md5: str, sizes: list[int], dest: Path) -> list[Path]:
    """Cut the archive into parts of these sizes (a zero size: no part for that call)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(f"*{PART_MARK}*of*"):
        old.unlink()
    count = sum(1 for s in sizes if s)
    parts, k = [], 0
    with open(archive, "rb") as src:
        for size in sizes:
            if not size:
                continue
            k += 1
            part = dest / f"{archive.name}.{md5}{PART_MARK}{k}of{count}"
            part.write_bytes(src.read(size))
            parts.append(part)
    return parts


def calls(tree: int, wheels_bytes: int, sizes: list[int], archive_name: str, md5: str, kit: Path = KIT) -> list[dict]:
    """The transfers, in order: what each holds (paths relative to the checkout) and the command to run after it."""
    kit_path = os.path.relpath(kit, REPO)
    count = sum(1 for s in sizes if s)
    names = iter(f"{kit_path}/data/{archive_name}.{md5}{PART_MARK}{k}of{count}" for k in range(1, count + 1))
    out = []
    for i, size in enumerate(sizes):
        carry = [f"{kit_path}/wheels"] if i == 0 else []
        if size:
            carry.append(next(names))
        last = i == len(sizes) - 1
        if i == 0:
            command, timeout = "PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --dry --out $OUT", 240
        elif last:
            command, timeout = "PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out $OUT", 480
        else:
            command, timeout = "python3 bench/gpu_check.py --stash-only", 60
        out.append({"command": command, "carry": carry, "timeout_s": timeout,
                    "bytes": tree + (wheels_bytes if i == 0 else 0) + size,
                    "tree": tree, "wheels": wheels_bytes if i == 0 else 0, "data": size})
    return out


def print_calls(plan: list[dict], limit_mib: float) -> None:
    for i, call in enumerate(plan, 1):
        parts = [f"tree {call['tree'] / MIB:.1f}"]
        if call["wheels"]:
            parts.append(f"wheels {call['wheels'] / MIB:.1f}")
        if call["data"]:
            parts.append(f"data part {call['data'] / MIB:.1f}")
        print(f"gpu_kit: transfer {i}: {call['bytes'] / MIB:.1f} MiB = {' + '.join(parts)} (limit {limit_mib:g} MiB)")
        print(f"    copy: the checkout and {' '.join(call['carry'])}")
        print(f"    then: {call['command']}   (at most {call['timeout_s']} s)")
    too_big = [i for i, c in enumerate(plan, 1) if c["bytes"] > limit_mib * MIB]
    if too_big:
        raise KitError(f"transfer {too_big[0]} would hold more than {limit_mib:g} MiB; pass a larger --limit-mib, "
                       "or make the kit or the working tree smaller (git status shows what travels)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kit", type=Path, default=KIT, help="where wheels/ and data/ go (default .gpukit)")
    p.add_argument("--python-version", default=DEVICE_PYTHON, help="the GPU machine's Python (default 3.12)")
    p.add_argument("--reuse-wheels", action="store_true", help="keep the wheels already in the kit")
    p.add_argument("--archive", type=Path, default=MIRROR, help="the CIFAR-10 binary archive to carry")
    p.add_argument("--md5", default=None, help="its MD5 (default: the local mirror's, for the mirror)")
    p.add_argument("--plan-bytes", type=int, default=None,
                   help="print the calls for an archive of this many bytes; split none (no archive here)")
    p.add_argument("--part-mib", type=float, default=PART_MIB, help="most MiB in one part")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="most MiB one transfer may hold")
    args = p.parse_args(argv)
    try:
        wheels = args.kit / "wheels"
        if args.reuse_wheels and (wheels / "kit.json").is_file():
            info = json.loads((wheels / "kit.json").read_text())
        else:
            info = build_wheels(args.kit, args.python_version)
        wheel_bytes = sum(f.stat().st_size for f in wheels.iterdir())
        print(f"gpu_kit: wheels: {len(info['wheels'])} files, {wheel_bytes / MIB:.1f} MiB, CPython "
              f"{info['python']} manylinux x86_64, in {wheels}")
        for name, why in info["left_out"].items():
            print(f"gpu_kit: left out {name}: {why}")
        tree = tree_bytes()
        print(f"gpu_kit: working tree: {tree / MIB:.1f} MiB (travels with every call)")
        if args.plan_bytes is not None:
            md5 = args.md5 or MIRROR_MD5
            name, sizes = args.archive.name, part_sizes(args.plan_bytes, tree, wheel_bytes, args.part_mib)
            print(f"gpu_kit: data: {args.plan_bytes / MIB:.1f} MiB in {sum(1 for s in sizes if s)} parts (not split)")
        else:
            if not args.archive.is_file():
                raise KitError(f"no archive at {args.archive}; pass --archive PATH (and --md5) or --plan-bytes N")
            md5 = args.md5 or (MIRROR_MD5 if args.archive.resolve() == MIRROR.resolve() else None)
            if md5 is None:
                raise KitError(f"pass --md5 with --archive {args.archive}: its checksum is checked before it is cut")
            if md5_of(args.archive) != md5:
                raise KitError(f"{args.archive} does not have the MD5 {md5}; fetch it again or pass its own --md5")
            name = args.archive.name
            sizes = part_sizes(args.archive.stat().st_size, tree, wheel_bytes, args.part_mib)
            parts = split_archive(args.archive, md5, sizes, args.kit / "data")
            print(f"gpu_kit: data: {args.archive.stat().st_size / MIB:.1f} MiB, MD5 {md5} checked, "
                  f"in {len(parts)} parts in {args.kit / 'data'}")
        print_calls(calls(tree, wheel_bytes, sizes, name, md5, args.kit), args.limit_mib)
    except KitError as e:
        print(f"gpu_kit: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
