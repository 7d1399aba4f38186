"""Test accuracy and training time of the speed-record CNN (`speedrun` study, variant cnn_fast).

    python -m bench.speedrun                                      # on a GPU: time-to-94%, 5 seeds
    python -m bench.speedrun --seeds 1 --epochs 2 --train-images 10240 --threads 1   # a CPU budget

Each seed is one real `cnnlab.training.train.train` run of the study's variant (no MLflow). Training time
is the sum of the epochs' training time (first batch to the start of validation), as the speed
records count it: data preparation, start-up, validation and test are left out. Last line:
`speedrun: mean test accuracy <acc> over <n> seeds, mean training time <s> s on <device>`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile

import torch

from bench.common import data_args, prepared_arrays
from cnnlab.study.studies import compose_config
from cnnlab.training.provenance import device_name
from cnnlab.training.train import train
from cnnlab.training.trainer import quiet_lightning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args(parser)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=0, help="override the study's epochs (0: keep them)")
    parser.add_argument("--train-images", type=int, default=0, help="training images per epoch (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (0: as the environment says)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. trainer.compile=true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    arrays = prepared_arrays(args)
    device = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    accs, seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            overrides = [f"data.arrays={arrays}", "tracking=none", "trainer.progress_bar=false",
                         f"trainer.threads={args.threads}", f"data.train_images={args.train_images}",
                         f"run.dir={tmp}/seed{seed}", *args.overrides]
            if args.epochs:
                overrides.append(f"trainer.max_epochs={args.epochs}")
            cfg = compose_config(overrides, study="speedrun", variant="cnn_fast", seed=seed)
            result = train(cfg)
            accs.append(result["test_acc"])
            seconds.append(result["train_seconds"])
            print(f"seed {seed}: test accuracy {result['test_acc']:.4f}, training {result['train_seconds']:.2f} s "
                  f"({result['epochs']} epochs)", flush=True)
    print(f"speedrun: mean test accuracy {statistics.mean(accs):.4f} over {len(accs)} seeds, "
          f"mean training time {statistics.mean(seconds):.2f} s on {device}")


if __name__ == "__main__":
    main()
