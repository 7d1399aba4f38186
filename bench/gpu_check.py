"""Every GPU figure of docs/benchmarks.md, on a GPU machine without network, in time-boxed sections.

    python3 bench/gpu_check.py --dry --out DIR    # after the first transfer: the whole GPU path on tiny data
    python3 bench/gpu_check.py --stash-only       # after each middle transfer: keep its data part
    python3 bench/gpu_check.py --out DIR          # after the last: rebuild CIFAR-10 from its parts, the real check
    python3 bench/gpu_check.py --archive A --md5 M --out DIR   # a machine that has the archive: all in one go

The kit (bench/gpu_kit.py: the wheels the machine lacks, the archive in parts) is copied to the
machine in transfers of limited size, the checkout with each (bench/README.md). After each:
1. it moves the data parts that transfer brought into the work folder (--work, kept between steps);
2. installs the wheels once, `python3 -m pip install --no-index --no-deps --target <work>/site`,
   and puts that folder, src/ and the checkout on PYTHONPATH (a machine that has Snakemake, Hydra
   and MLflow already needs no wheels);
3. takes the data: with every part there, the archive rebuilt and checked against the MD5 in the
   parts' names; with --dry and parts missing, a tiny archive made here;
4. runs the sections, each in its own time box (seconds, --dry in brackets), each with its status,
   one failing or running out of time without losing the others:
   - prepare, 60 [30]: the workflow's own rule turns the archive into results/data/cifar10.npz;
   - speedrun, 90 [30]: the speedrun study's fast CNN, 3 seeds [1 seed, 1 epoch, 256 images];
   - packing, 120 [45]: the same 8 jobs [2] (lecture CNN baseline, 3 epochs [smoke, 1]) at 1, 2, 4,
     8 [1, 2] jobs per GPU: jobs per hour, and the jobs per GPU that finished them soonest;
   - study, 120 [60]: the lecture study [smoke] at one seed through the real `snakemake`, at those
     jobs per GPU: wall time (or how far it got), test accuracy per variant, start-up and
     after-training seconds (bench.job_overhead).
   The boxes add up to 6 min 30 s [2 min 45 s]; with the install (about 30 s, once) and packing the
   logs, the dry check ends within 240 s and the real one within 480 s (--box-factor scales every
   box). The lecture study at 30 epochs is not expected to finish in its box: its line says how
   many of its jobs did, which sizes a longer run.
5. writes `gpu_check_results.txt` (`gpu_check_dry_results.txt`) under --out as it goes: device,
   torch and CUDA versions, each figure, each section's status; at the end the logs as
   `gpu_check_logs.tar.gz` (`gpu_check_dry_logs.tar.gz`). Exit status 0 when every section passed.

No network is used or needed: MLflow's telemetry is off (MLFLOW_DISABLE_TELEMETRY, DO_NOT_TRACK),
pip gets --no-index. Only the standard library is imported here: cnnlab and the kit run in the
child processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIRROR_MD5 = "e7e97d82bba59a97f7458a4485924275"  # bench/common.py's mirror, decoded from JPEGs
PART = re.compile(r"^(?P<name>.+)\.(?P<md5>[0-9a-f]{32})\.part(?P<k>\d+)of(?P<n>\d+)$")
KIT_MODULES = "snakemake, hydra, omegaconf, mlflow, pooch, setproctitle"
OUT_FILE_LIMIT = 15 * 2**20  # the device returns files of up to 16 MiB
NO_NETWORK = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "PIP_NO_INDEX": "1",
              "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


class CheckError(Exception):
    """Something the caller must fix before the check can run; one sentence."""


class Results:
    """The results file, written line by line so that a cut-off run still returns what it measured."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def say(self, line: str) -> None:
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def stash_parts(kit: Path, parts: Path) -> None:
    """Move the data parts this transfer brought out of the checkout, where later transfers leave them alone."""
    parts.mkdir(parents=True, exist_ok=True)
    for part in sorted((kit / "data").glob("*.part*of*")) if (kit / "data").is_dir() else ():
        if PART.match(part.name):
            shutil.move(str(part), parts / part.name)


def parts_here(parts: Path) -> tuple[dict[int, Path], int, str, str]:
    """({k: part}, how many there are in all, the archive's name, its MD5); ({}, 0, '', '') when none."""
    found = {p: PART.match(p.name) for p in sorted(parts.glob("*"))} if parts.is_dir() else {}
    found = {p: m for p, m in found.items() if m}
    if not found:
        return {}, 0, "", ""
    keys = {(m["name"], m["md5"], m["n"]) for m in found.values()}
    if len(keys) > 1:
        raise CheckError(f"the parts in {parts} come from more than one archive ({len(keys)}); remove the "
                         "folder and carry one kit's parts")
    name, md5, n = keys.pop()
    return {int(m["k"]): p for p, m in found.items()}, int(n), name, md5


def rebuild(parts: dict[int, Path], count: int, name: str, md5: str, dest_dir: Path) -> Path:
    missing = [k for k in range(1, count + 1) if k not in parts]
    if missing:
        raise CheckError(f"data part {missing[0]} of {count} is not here: copy it over (bench/README.md, transfer "
                         f"{missing[0]}), or start again from the first transfer if the work folder was lost")
    dest = dest_dir / name
    digest = hashlib.md5()
    with open(dest, "wb") as out:
        for k in range(1, count + 1):
            with open(parts[k], "rb") as f:
                while block := f.read(2**20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != md5:
        raise CheckError(f"the archive rebuilt from {count} parts has MD5 {digest.hexdigest()}, not {md5}; "
                         "build the kit again (bench/gpu_kit.py) and carry all of its parts")
    return dest


def install_kit(kit: Path, site: Path, env: dict) -> str:
    """Install the wheels into site once per kit; return what was done, for the results file."""
    wheels = kit / "wheels"
    info = wheels / "kit.json"
    marker = site / ".cnnlab-kit.json"
    if info.is_file():
        if marker.is_file() and marker.read_text() == info.read_text():
            return f"kit: installed already in {site}"
        shutil.rmtree(site, ignore_errors=True)
        files = sorted(str(w) for w in wheels.glob("*.whl"))
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                               "--no-compile", "--no-cache-dir", "--target", str(site), *files],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise CheckError(f"installing the {len(files)} wheels of {wheels} failed:\n{proc.stderr[-3000:]}")
        marker.write_text(info.read_text())
        built = json.loads(info.read_text())
        return (f"kit: {len(files)} wheels installed in {time.monotonic() - start:.0f} s (built {built['built']} "
                f"at commit {built['commit']} for Python {built['python']})")
    if marker.is_file():
        return f"kit: installed by an earlier step in {site}"
    return "kit: none carried; using the packages this Python has"


def run_boxed(cmd: list[str], log: Path, deadline: float, env: dict, cwd: Path = REPO) -> tuple[int | None, float]:
    """Run cmd with its output in log until it ends or the deadline passes; (exit status or None, seconds)."""
    start = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            out.write(f"gpu_check: stopped at the section's time box after {time.monotonic() - start:.0f} s\n")
            return None, time.monotonic() - start
    return proc.returncode, time.monotonic() - start


class SectionFailed(Exception):
    pass


class Check:
    def __init__(self, args, env: dict, results: Results, archive: Path, md5: str):
        self.dry, self.env, self.results = args.dry, env, results
        self.work, self.archive, self.md5 = args.work, archive, md5
        self.logs = args.work / "logs"
        self.wd = args.work / "workflow"
        self.jobs_per_gpu = args.jobs_per_gpu
        self.cores = str(os.cpu_count() or 1)
        self.deadline = 0.0
        self.statuses: dict[str, str] = {}

    def run(self, name: str, cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> None:
        code, _ = run_boxed(cmd, self.logs / f"{name}.log", self.deadline, env or self.env, cwd)
        if code is None:
            raise TimeoutError
        if code != 0:
            raise SectionFailed(f"exit status {code}")

    def section(self, name: str, box_s: float, body) -> None:
        """Run one section in its time box and write its status; never raises."""
        start = time.monotonic()
        self.deadline = start + box_s
        try:
            body()
            status = "ok"
        except TimeoutError:
            status = f"TIMED OUT at its box of {box_s:.0f} s"
        except SectionFailed as e:
            status = f"FAILED ({e}; logs/{name}.log)"
        except Exception as e:  # a section's bug must not lose the sections after it
            status = f"FAILED ({type(e).__name__}: {e})"
        self.statuses[name] = status
        self.results.say(f"section {name}: {status}, {time.monotonic() - start:.0f} s")

    def snakemake(self, targets: list[str], extra: list[str]) -> list[str]:
        config = ["study=gpu_check", f"data_url=file://{self.archive}", f"data_md5={self.md5}", *extra]
        if self.dry:
            config += ["train_records=500", "test_records=100", "val_size=100"]
        return [sys.executable, "-m", "snakemake", *targets, "--cores", self.cores, "-s", str(self.wd / "Snakefile"),
                "--directory", str(self.wd), "--config", *config]

    def prepare(self) -> None:
        shutil.rmtree(self.wd, ignore_errors=True)
        self.wd.mkdir(parents=True)
        # The rules name environment.yml (conda:), which Snakemake records even without --use-conda.
        for name in ("Snakefile", "environment.yml", "environment.post-deploy.sh"):
            shutil.copy(REPO / name, self.wd)
        for folder in ("workflow", "conf"):
            shutil.copytree(REPO / folder, self.wd / folder)
        parent = "smoke" if self.dry else "lecture"
        (self.wd / "conf" / "study" / "gpu_check.yaml").write_text(
            f"extends: {parent}\ndescription: {parent} at one seed (bench/gpu_check.py).\nseeds: [0]\n")
        self.run("prepare", self.snakemake(["results/data/cifar10.npz"], []))

    def speedrun(self) -> None:
        sizes = ["--seeds", "1", "--epochs", "1", "--train-images", "256", "--threads", "1",
                 "trainer.batch_size=128", "model.width=8"] if self.dry else ["--seeds", "3"]
        self.run("speedrun", [sys.executable, "-m", "bench.speedrun", "--workdir", str(self.wd), "--archive",
                              str(self.archive), "--md5", self.md5, *sizes])
        for line in (self.logs / "speedrun.log").read_text().splitlines():
            if line.startswith("seed "):
                self.results.say(f"speedrun: {line}")
            elif line.startswith("speedrun:"):
                self.results.say(line)

    def packing(self) -> None:
        levels, n_jobs = ([1, 2], 2) if self.dry else ([1, 2, 4, 8], 8)
        overrides = (["study=smoke", "variant=cnn_baseline", "trainer.max_epochs=1"] if self.dry
                     else ["study=lecture", "variant=cnn_baseline", "trainer.max_epochs=3"])
        arrays = self.wd / "results" / "data" / "cifar10.npz"
        best = (0.0, 1)
        for k in levels:
            env = {**self.env, "CNNLAB_JOBS_PER_GPU": str(k), "CNNLAB_GPU_LOCK_DIR": str(self.work / f"locks-k{k}"),
                   "CUDA_VISIBLE_DEVICES": self.env.get("CUDA_VISIBLE_DEVICES", "0"), "OMP_NUM_THREADS": "1"}
            runs = self.work / f"pack-k{k}"
            shutil.rmtree(runs, ignore_errors=True)

            def job(seed: int, k: int = k, env: dict = env, runs: Path = runs) -> None:
                if time.monotonic() > self.deadline:
                    raise TimeoutError
                self.run(f"packing-k{k}-seed{seed}", [
                    sys.executable, "-m", "cnnlab.launch.forkserver", *overrides, f"seed={seed}", "tracking=none",
                    "trainer.progress_bar=false", "trainer.threads=1", f"data.arrays={arrays}",
                    f"run.dir={runs}/seed{seed}"], env=env)

            start = time.monotonic()
            with ThreadPoolExecutor(k) as pool:
                for future in [pool.submit(job, seed) for seed in range(n_jobs)]:
                    future.result()
            wall = time.monotonic() - start
            rate = 3600 * n_jobs / wall
            self.results.say(f"packing: {k} jobs per GPU: {n_jobs} jobs in {wall:.1f} s = {rate:.0f} jobs/hour")
            best = max(best, (rate, k))
        self.results.say(f"packing: most jobs per hour at {best[1]} jobs per GPU")
        self.jobs_per_gpu = self.jobs_per_gpu or best[1]

    def study(self) -> None:
        k = self.jobs_per_gpu or 1
        start = time.monotonic()
        try:
            self.run("study", self.snakemake([], [f"jobs_per_gpu={k}"]))
        finally:
            runs = sorted((self.wd / "results" / "gpu_check" / "runs").glob("*/seed0/result.json"))
            done = re.findall(r"(\d+) of (\d+) steps", (self.logs / "study.log").read_text())
            progress = f"{done[-1][0]} of {done[-1][1]} workflow steps" if done else "no workflow step"
            self.results.say(f"study: {'lecture' if not self.dry else 'smoke'} at one seed through snakemake, {k} "
                             f"jobs per GPU: wall time {time.monotonic() - start:.0f} s, {progress} done "
                             f"({len(runs)} training jobs finished, sweep included)")
            for path in runs:
                r = json.loads(path.read_text())
                self.results.say(f"study: {r['variant']:<20} test accuracy {r['test_acc']:.4f}  ({r['epochs']} "
                                 f"epochs, training {r['train_seconds']:.1f} s, start-up {r['startup_seconds']:.1f} s)")
            if runs:
                proc = subprocess.run([sys.executable, "-m", "bench.job_overhead", "--workdir", str(self.wd),
                                       "--study", "gpu_check"], capture_output=True, text=True, env=self.env, cwd=REPO)
                for line in proc.stdout.splitlines()[-4:]:
                    self.results.say(f"study: {line}")


def describe_environment(env: dict) -> list[str]:
    """Device, versions and driver, from a child process that imports what the kit installed."""
    code = f"""
import platform, torch, pytorch_lightning, mlflow, snakemake, hydra, cnnlab
import {KIT_MODULES}
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no GPU)"
print(f"device: {{gpu}}")
print(f"versions: python {{platform.python_version()}}, torch {{torch.__version__}}, CUDA {{torch.version.cuda}}, "
      f"cuDNN {{torch.backends.cudnn.version()}}, lightning {{pytorch_lightning.__version__}}, "
      f"mlflow {{mlflow.__version__}}, snakemake {{snakemake.__version__}}, hydra {{hydra.__version__}}, "
      f"cnnlab {{cnnlab.__version__}}")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise CheckError(f"the packages the check needs do not import ({KIT_MODULES}, torch, cnnlab); carry the "
                         f"kit (bench/gpu_kit.py):\n{proc.stderr[-2000:]}")
    lines = proc.stdout.splitlines()
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True)
        lines += [f"nvidia-smi: {row.strip()}" for row in smi.stdout.splitlines()]
    return lines


def pack_logs(work: Path, dest: Path) -> str:
    """The section logs and the workflow's logs, benchmarks and run results as one tar.gz under 15 MiB."""
    files = [p for p in sorted((work / "logs").glob("*.log"))]
    wd = work / "workflow"
    for pattern in ("logs/**/*", "benchmarks/**/*", "results/**/result.json", ".snakemake/log/*.log"):
        files += [p for p in sorted(wd.glob(pattern)) if p.is_file()]
    files += [p for p in sorted(work.glob("pack-k*/seed*/*.json")) if p.is_file()]
    left_out = []
    while True:
        with tarfile.open(dest, "w:gz") as tar:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(work)))
        if dest.stat().st_size <= OUT_FILE_LIMIT or not files:
            break
        biggest = max(files, key=lambda p: p.stat().st_size)
        files.remove(biggest)
        left_out.append(str(biggest.relative_to(work)))
    note = f"; left out as too large: {', '.join(left_out)}" if left_out else ""
    return f"logs: {len(files)} files in {dest.name} ({dest.stat().st_size / 2**20:.1f} MiB){note}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true", help="tiny sizes: the whole path in about a minute")
    p.add_argument("--stash-only", action="store_true", help="only keep the data part this transfer brought")
    p.add_argument("--kit", type=Path, default=REPO / ".gpukit", help="what bench/gpu_kit.py made (default .gpukit)")
    p.add_argument("--work", type=Path, default=Path("/tmp/cnnlab-gpu-check"), help="kept between steps")
    p.add_argument("--out", type=Path, default=None, help="where the results and logs go (default <work>/out)")
    p.add_argument("--archive", type=Path, default=None, help="a CIFAR-10 binary archive to use instead of parts")
    p.add_argument("--md5", default=MIRROR_MD5, help="the MD5 of --archive")
    p.add_argument("--box-factor", type=float, default=1.0,
                   help="multiply every time box (the CPU rehearsal's 2 cores are slower than the GPU machine)")
    p.add_argument("--jobs-per-gpu", type=int, default=0, help="for the study (default: packing's best)")
    args = p.parse_args(argv)
    args.work = args.work.resolve()
    out = (args.out or args.work / "out").resolve()
    parts_dir, site = args.work / "parts", args.work / "site"
    try:
        stash_parts(args.kit, parts_dir)
        parts, count, name, md5 = parts_here(parts_dir)
        env = {**os.environ, **NO_NETWORK}
        if args.stash_only:
            if (args.kit / "wheels" / "kit.json").is_file():
                print(f"gpu_check: {install_kit(args.kit, site, env)}")
            installed = (site / ".cnnlab-kit.json").is_file()
            print(f"gpu_check: data parts here: {sorted(parts) or 'none'} of {count}; kit installed: {installed}")
            if not installed:
                raise CheckError("the kit that the first step installs is not here (a fresh machine, or the work "
                                 "folder was cleared); start again from the first transfer")
            return 0
        bin_dir = args.work / "bin"  # the workflow's shell commands call `python`; the machine may have only python3
        bin_dir.mkdir(parents=True, exist_ok=True)
        if not (bin_dir / "python").exists():
            (bin_dir / "python").symlink_to(sys.executable)
        (args.work / "logs").mkdir(parents=True, exist_ok=True)
        for old in (args.work / "logs").glob("*.log"):
            old.unlink()
        env["PYTHONPATH"] = os.pathsep.join(
            x for x in (str(site), str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")) if x)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["CNNLAB_GPU_LOCK_DIR"] = str(args.work / "locks")
        if args.dry:
            env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # a stand-in GPU id where there is none: the slots still run
        prefix = "gpu_check_dry" if args.dry else "gpu_check"
        results = Results(out / f"{prefix}_results.txt")
        now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results.say(f"gpu_check: {'dry' if args.dry else 'full'} check, {now}")
        results.say(install_kit(args.kit, site, env))
        for line in describe_environment(env):
            results.say(line)
        if args.archive is not None:
            archive, md5 = args.archive.resolve(), args.md5
        elif parts and len(parts) == count or not args.dry:
            archive = rebuild(parts, count, name, md5, args.work) if count else None
            if archive is None:
                raise CheckError("no data parts are here: copy them over as bench/README.md's transfers say")
            results.say(f"data: {archive.name} rebuilt from {count} parts, MD5 {md5} checked")
        else:
            sys.path.insert(0, str(REPO))
            from tests.tiny_cifar import write_tiny_archive

            archive = args.work / "tiny-cifar-10-binary.tar.gz"
            md5 = write_tiny_archive(archive, 100)
            results.say(f"data: a tiny archive made here (600 images); parts here: {sorted(parts) or 'none'} "
                        f"of {count}")
        if md5 == MIRROR_MD5:
            results.say("data: the CIFAR-10 mirror, decoded from a JPEG re-encoding (its README): accuracies run a "
                        "little below those on the official pixels, on which the fast CNN's 94% target was set")
        check = Check(args, env, results, archive, md5)
        boxes = {"prepare": 30, "speedrun": 30, "packing": 45, "study": 60} if args.dry else \
                {"prepare": 60, "speedrun": 90, "packing": 120, "study": 120}
        for section in ("prepare", "speedrun", "packing", "study"):
            check.section(section, boxes[section] * args.box_factor, getattr(check, section))
        results.say(pack_logs(args.work, out / f"{prefix}_logs.tar.gz"))
        failed = [s for s, status in check.statuses.items() if status != "ok"]
        results.say(f"gpu_check: {len(check.statuses) - len(failed)} of {len(check.statuses)} sections ok"
                    + (f"; not ok: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0
    except CheckError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
