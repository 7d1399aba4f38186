#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one call, written to one results file:
#   1. packing: throughput of the same training jobs with 1, 2, 4 and 8 jobs per GPU (slot locks
#      of cnnlab.training.gpu), and the jobs per GPU that finished them soonest;
#   2. the lecture study at one seed (its 18 variants, 30 epochs, plus the learning-rate sweep it
#      takes its rates from) through the real `snakemake`, with the jobs per GPU chosen in 1
#      (or --jobs-per-gpu): wall time, test accuracy per variant;
#   3. the speedrun study's fast CNN (bench/speedrun.py): test accuracy and training time per seed,
#      their means (published reference: 94% in 3.83 s on one A100).
#
#   bash bench/gpu_check.sh [--archive PATH --md5 MD5] [--out FILE] [--jobs-per-gpu K] [--work DIR]
#   bash bench/gpu_check.sh --dry        # the same steps on the CPU, tiny sizes (CI runs this)
#
# What it expects: one GPU (more are used as the lecture study's slots; packing uses GPU 0), no
# internet. torch and Lightning installed; Snakemake, Hydra, MLflow and their own dependencies as
# wheels in $WHEELS (default: .whl/ in the repository), made on a machine with the same Python and
# platform by `pip download -d .whl 'snakemake>=9,<10' 'hydra-core>=1.3,<1.4' 'mlflow>=3.7,<4'
# pooch setproctitle 'setuptools>=77'` (torch is not among their dependencies); installed with
# `pip install --no-index` when `import snakemake, hydra, mlflow, setproctitle` fails. The CIFAR-10 binary
# archive at --archive (default: ../shared/data/cifar10/cifar-10-binary.tar.gz) with its MD5.
# The sizes below are chosen to fit about 8 minutes on one H100-class GPU (docs/notes.md).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

archive=$REPO/../shared/data/cifar10/cifar-10-binary.tar.gz
md5=e7e97d82bba59a97f7458a4485924275
out=""
work=${WORK:-/tmp/cnnlab-gpu-check}
dry=false
jobs_per_gpu=""  # empty: the packing measurement chooses
while (( $# )); do
    case $1 in
        --archive) archive=$2; shift 2 ;;
        --md5) md5=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --jobs-per-gpu) jobs_per_gpu=$2; shift 2 ;;
        --dry) dry=true; shift ;;
        *) echo "gpu_check: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
out=${out:-$work/gpu_check_results.txt}

if $dry; then
    # Tiny sizes: a 600-image archive, the smoke study's networks, 1 epoch; stand-in GPU ids so
    # the slot locks and the `gpu` resource are exercised without a GPU.
    export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-0}
    pack_levels=(1 2)
    pack_jobs=2
    pack_overrides=(study=smoke variant=cnn_baseline trainer.max_epochs=1)
    study_config=(train_records=500 test_records=100 val_size=100)
    study_parent=smoke
    speedrun_args=(--seeds 1 --epochs 1 --train-images 256 --threads 1 trainer.batch_size=128 model.width=8)
    cores=2
else
    pack_levels=(1 2 4 8)
    pack_jobs=8  # the same 8 jobs at every level: lecture CNN baseline, 3 epochs, seeds 0-7
    pack_overrides=(study=lecture variant=cnn_baseline trainer.max_epochs=3)
    study_config=()
    study_parent=lecture
    speedrun_args=(--seeds 3)
    cores=$(nproc)
fi

if ! python -c 'import snakemake, hydra, mlflow, setproctitle' 2>/dev/null; then
    wheels=${WHEELS:-$REPO/.whl}
    echo "gpu_check: installing Snakemake, Hydra, MLflow from $wheels (no index)"
    python -m pip install -q --no-index --find-links "$wheels" -e "$REPO"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # bench.* and tests.tiny_cifar
mkdir -p "$work" "$(dirname "$out")"
export CNNLAB_GPU_LOCK_DIR=$work/locks  # this check's slots only
trap 'echo "gpu_check: a step failed; its log is in $work (prepare.log, pack-k*.log, study.log)" >&2' ERR
: > "$out"
say() { echo "$*" | tee -a "$out"; }

if $dry; then
    archive=$work/tiny-cifar-10-binary.tar.gz
    md5=$(python -c "from tests.tiny_cifar import write_tiny_archive; print(write_tiny_archive('$archive', 100))")
fi

device=$(python -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no GPU)")')
say "gpu_check: device: $device"
say "gpu_check: date: $(date -u +%Y-%m-%dT%H:%MZ), commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown), dry: $dry"

# The study runs in a copy of the workflow, with a one-seed study that extends the real one.
wd=$work/workflow
rm -rf "$wd"
mkdir -p "$wd"
cp Snakefile "$wd/"
cp -r workflow conf "$wd/"
printf 'extends: %s\ndescription: %s at one seed (bench/gpu_check.sh).\nseeds: [0]\n' \
    "$study_parent" "$study_parent" > "$wd/conf/study/gpu_check.yaml"

# Data: downloaded (file://) and prepared by the workflow's own rule, reused by every step.
snakemake results/data/cifar10.npz --cores "$cores" -s "$wd/Snakefile" --directory "$wd" \
    --config study=gpu_check "data_url=file://$(realpath "$archive")" "data_md5=$md5" "${study_config[@]}" \
    > "$work/prepare.log" 2>&1
arrays=$wd/results/data/cifar10.npz

# 1. Packing: the same jobs, k at a time on GPU 0, each pinned through the slot locks, each
#    started warm as the workflow's jobs are (cnnlab.launch.forkserver).
best_k=1
best_rate=0
for k in "${pack_levels[@]}"; do
    locks=$work/locks-k$k
    rm -rf "$locks" "$work/pack-k$k"
    start=$(date +%s.%N)
    seq 0 $((pack_jobs - 1)) | CNNLAB_JOBS_PER_GPU=$k CNNLAB_GPU_LOCK_DIR=$locks \
        CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-0} OMP_NUM_THREADS=1 xargs -P "$k" -I{} \
        python -m cnnlab.launch.forkserver "${pack_overrides[@]}" seed={} tracking=none trainer.progress_bar=false \
        trainer.threads=1 data.arrays="$arrays" run.dir="$work/pack-k$k/seed{}" \
        > "$work/pack-k$k.log" 2>&1
    wall=$(python -c "import time; print(f'{time.time() - $start:.1f}')")
    rate=$(python -c "print(f'{3600 * $pack_jobs / $wall:.0f}')")
    say "packing: $k jobs per GPU: $pack_jobs jobs in $wall s = $rate jobs/hour"
    if (( rate > best_rate )); then best_rate=$rate; best_k=$k; fi
done
say "packing: most jobs per hour at $best_k jobs per GPU"
jobs_per_gpu=${jobs_per_gpu:-$best_k}

# 2. The study through the real snakemake, jobs_per_gpu jobs sharing each GPU.
start=$(date +%s.%N)
snakemake --cores "$cores" -s "$wd/Snakefile" --directory "$wd" \
    --config study=gpu_check "data_url=file://$(realpath "$archive")" "data_md5=$md5" "${study_config[@]}" \
    "jobs_per_gpu=$jobs_per_gpu" > "$work/study.log" 2>&1
wall=$(python -c "import time; print(f'{time.time() - $start:.0f}')")
say "study: $study_parent at one seed through snakemake, $jobs_per_gpu jobs per GPU: wall time $wall s" \
    "($(find "$wd/results" -name result.json -path '*/runs/*' | wc -l) training jobs, sweep included)"
python - "$wd/results/gpu_check/runs" <<'PY' | tee -a "$out"
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*/seed0/result.json")):
    r = json.loads(f.read_text())
    print(f"study: {r['variant']:<20} test accuracy {r['test_acc']:.4f}  ({r['epochs']} epochs, "
          f"training {r['train_seconds']:.1f} s, start-up {r['startup_seconds']:.1f} s)")
PY
python -m bench.job_overhead --workdir "$wd" --study gpu_check | tail -4 | sed 's/^/study: /' | tee -a "$out"

# 3. The fast CNN of the speedrun study, on the prepared arrays.
python -m bench.speedrun --workdir "$wd" "${speedrun_args[@]}" 2>&1 \
    | grep -E "^seed |^speedrun:" | sed 's/^seed /speedrun: seed /' | tee -a "$out"

echo "gpu_check: results in $out"
