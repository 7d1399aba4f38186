#!/usr/bin/env bash
# On a machine with a GPU: train one CNN variant of the lecture study and print its epoch time,
# images per second and test accuracy (no MLflow needed).
#
#   bash bench/gpu_check.sh /path/to/cifar-10-binary.tar.gz <md5> [variant] [epochs]
#
# Needs torch and Lightning (pip install -e . or the wheels); the archive is the official one or a mirror.
set -euo pipefail
archive=${1:?path to the CIFAR-10 binary archive}
md5=${2:?its MD5}
variant=${3:-cnn_all}
epochs=${4:-10}
work=${WORK:-/tmp/cnnlab-gpu-check}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - "$archive" "$md5" "$work" <<'PY'
import sys
from pathlib import Path
from cnnlab.download import fetch_archive
from cnnlab.preprocess import prepare
archive, md5, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
arrays = work / "data" / "cifar10.npz"
if not arrays.exists():
    prepare(fetch_archive(archive, md5, work / "cifar-10-binary.tar.gz"), arrays, arrays.with_suffix(".json"), md5)
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -m cnnlab.train study=lecture variant="$variant" seed=0 tracking=none trainer.progress_bar=false \
    trainer.max_epochs="$epochs" data.arrays="$work/data/cifar10.npz" run.dir="$work/run-$variant" 2>&1 \
    | grep -E "epoch [0-9]+:|test/acc|GPU available|error"
python - "$work/run-$variant/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"gpu_check: {r['variant']} test/acc {r['test_acc']:.4f} in {r['epochs']} epochs, job {r['job_seconds']:.1f} s")
PY
