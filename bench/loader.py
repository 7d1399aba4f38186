"""Training-input throughput: cnnlab's whole-batch TrainBatches against a classic per-sample DataLoader.

    python bench/loader.py                          # the real archive at ../shared/data/cifar10/
    python bench/loader.py --archive /path/cifar-10-binary.tar.gz --rounds 5

Both pipelines produce the same thing for one epoch over the 45,000 training images of the default
split: shuffled batches of 128, translated by up to 4 pixels with zero padding, randomly flipped,
z-scored with the training statistics, as float32 (B, 3, 32, 32) tensors in the main process.

- cnnlab: `normalize` once (uint8 -> z-scored float32 of the whole split), then `TrainBatches`
  (which pads the split once for translation), in the main process on --threads torch threads
  (default 1: one core against the per-sample loader's two worker processes). That set-up runs
  once per training run, so the headline charges each epoch a share of it: 1 / --run-epochs,
  by default the max_epochs of conf/trainer/default.yaml. The steady state and the worst case,
  set-up charged in full to every epoch, are printed too.
- per-sample: what a user writes with torchvision, a Dataset whose __getitem__ turns one HWC uint8
  array into a PIL image and applies RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(),
  Normalize(mean, std), in a DataLoader(batch_size=128, shuffle=True, num_workers=2). torchvision is
  used when installed; otherwise the four transforms below do what torchvision's do for a PIL RGB
  image (same padding, same random draws from torch's generator, same conversions).

Warm-up (one epoch of cnnlab, --warmup-batches of the DataLoader, which starts its persistent
workers) is excluded; the measured epochs alternate between the two, so on a shared machine both
see the same load, and the CPU seconds each pipeline used (main process plus workers) are printed
as a measure that other load does not move. The last line is the headline, the one figure
docs/benchmarks.md quotes: images per second against the per-sample loader with the set-up shared
by one run's epochs, over all rounds, then each round's own ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml
from PIL import Image, ImageOps

from cnnlab.data.batches import TrainBatches, normalize
from cnnlab.data.cifar import read_archive
from cnnlab.data.preprocess import split_indices, zscore_stats

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO / ".." / "shared" / "data" / "cifar10" / "cifar-10-binary.tar.gz"


class RandomCrop:
    """torchvision.transforms.RandomCrop(size, padding) on a PIL image, constant (zero) fill."""

    def __init__(self, size: int, padding: int):
        self.size, self.padding = size, padding

    def __call__(self, img: Image.Image) -> Image.Image:
        img = ImageOps.expand(img, border=self.padding, fill=0)  # torchvision's PIL pad, mode "constant"
        w, h = img.size
        i = int(torch.randint(0, h - self.size + 1, size=(1,)).item())
        j = int(torch.randint(0, w - self.size + 1, size=(1,)).item())
        return img.crop((j, i, j + self.size, i + self.size))


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if torch.rand(1) < self.p else img


class ToTensor:
    """PIL uint8 (H, W, C) -> float32 (C, H, W) on [0, 1], as torchvision.transforms.ToTensor."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        t = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(img.size[1], img.size[0], len(img.getbands()))
        return t.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)


class Normalize:
    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t.clone().sub_(self.mean).div_(self.std)  # torchvision's inplace=False


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


def per_sample_transform(mean, std):
    try:
        import torchvision.transforms as T
    except ImportError:
        T = None
    if T is not None:
        return "torchvision", T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                         T.Normalize(mean, std)])
    transforms = [RandomCrop(32, 4), RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)]
    return "PIL re-implementation", Compose(transforms)


class PilCifar(torch.utils.data.Dataset):
    """As torchvision.datasets.CIFAR10: HWC uint8 arrays in memory, one PIL image per __getitem__."""

    def __init__(self, x_hwc: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x_hwc, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def cnnlab_batches(x_train, y_train, mean, std, batch_size):
    """(batches, seconds of the once-per-run work: normalising the split, padding it in TrainBatches)."""
    t0 = time.perf_counter()
    x = normalize(torch.from_numpy(x_train), mean, std)  # (N, 3, 32, 32) float32
    aug = SimpleNamespace(translate=4, padding_mode="zeros", flip=True, cutout=0)
    batches = TrainBatches(x, torch.from_numpy(y_train).long(), batch_size, seed=0, augment=aug)
    return batches, time.perf_counter() - t0


def per_sample_loader(x_train, y_train, mean, std, batch_size, workers):
    name, transform = per_sample_transform(mean, std)
    ds = PilCifar(np.ascontiguousarray(x_train.transpose(0, 2, 3, 1)), y_train, transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    return loader, name


def time_epoch(batches) -> tuple[float, int]:
    """Seconds and images for one full pass; each batch is only received, not used."""
    n, t0 = 0, time.perf_counter()
    for xb, _ in batches:
        n += len(xb)
    return time.perf_counter() - t0, n


def worker_cpu_seconds(loader) -> float:
    """CPU seconds used so far by the DataLoader's worker processes (Linux /proc; 0 where unreadable)."""
    total = 0.0
    for w in getattr(getattr(loader, "_iterator", None), "_workers", []):
        try:
            fields = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="the CIFAR-10 binary .tar.gz")
    ap.add_argument("--rounds", type=int, default=3, help="measured epochs of each pipeline, alternating")
    ap.add_argument("--warmup-batches", type=int, default=30, help="per-sample batches before timing")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the main process (cnnlab's pipeline)")
    ap.add_argument("--run-epochs", type=int, default=None,
                    help="epochs of one training run, over which set-up is shared (default: conf/trainer/default.yaml)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run_epochs = args.run_epochs or int(yaml.safe_load((REPO / "conf/trainer/default.yaml").read_text())["max_epochs"])

    data = read_archive(args.archive)
    tr, _ = split_indices(len(data.y_train), args.val_size, seed=0)
    x_train, y_train = data.x_train[tr], data.y_train[tr]
    mean, std = zscore_stats(x_train)
    load = os.getloadavg()[0]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {load:.1f}; torch {torch.__version__}")
    print(f"training images per epoch: {len(y_train)}, batch {args.batch_size}")

    batches, t_norm = cnnlab_batches(x_train, y_train, mean, std, args.batch_size)
    loader, name = per_sample_loader(x_train, y_train, mean, std, args.batch_size, args.workers)
    time_epoch(batches)  # warm-up epoch
    for k, _ in enumerate(loader):  # warm-up batches; starts the persistent workers
        if k + 1 >= args.warmup_batches:
            break
    # Rounds of one epoch each, alternating, so both see the same load on a shared machine.
    secs = bsecs = cpu = bcpu = 0.0
    n = bn = 0
    round_speedups = []
    for r in range(args.rounds):
        batches.set_epoch(r + 1)
        c0 = time.process_time()
        s_, n_ = time_epoch(batches)
        c1 = time.process_time()
        w0 = worker_cpu_seconds(loader)
        b_, bn_ = time_epoch(loader)
        bcpu += time.process_time() - c1 + worker_cpu_seconds(loader) - w0
        cpu += c1 - c0
        secs, n, bsecs, bn = secs + s_, n + n_, bsecs + b_, bn + bn_
        round_speedups.append(n_ / (s_ + t_norm / run_epochs) / (bn_ / b_))
        print(f"round {r + 1}: cnnlab {s_:.2f} s/epoch, per-sample {b_:.2f} s/epoch")
    steady = n / secs
    per_run = n / (secs + t_norm * args.rounds / run_epochs)  # set-up shared by the epochs of one run
    worst = n / (secs + t_norm * args.rounds)  # set-up paid again in every epoch
    baseline = bn / bsecs
    print(f"cnnlab TrainBatches ({args.threads} thread): {n} images in {secs:.2f} s = {steady:,.0f} img/s; "
          f"set-up once per run (normalize, pad) {t_norm:.2f} s")
    print(f"per-sample DataLoader ({name}, {args.workers} workers): {bn} images in {bsecs:.2f} s "
          f"= {baseline:,.0f} img/s")
    print(f"CPU seconds per epoch (all processes): cnnlab {cpu / args.rounds:.2f}, per-sample {bcpu / args.rounds:.2f} "
          f"-> {bcpu / cpu * n / bn:.1f}x fewer per image")
    print(f"speedup: {steady / baseline:.1f}x steady state, {per_run / baseline:.1f}x with set-up shared by a "
          f"{run_epochs}-epoch run, {worst / baseline:.1f}x with set-up in every epoch; "
          f"load average {os.getloadavg()[0]:.1f}")
    rounds = ", ".join(f"{v:.1f}x" for v in round_speedups)
    print(f"loader_speedup_vs_per_sample: {per_run / baseline:.1f}x (rounds: {rounds})")


if __name__ == "__main__":
    main()
