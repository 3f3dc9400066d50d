#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md in one run, on a machine with one CUDA device and the suite's Python packages
# (PYTHONPATH may point at them): LabelPooling's share of a paper-recipe training step, label-map generation
# against the bare forward of the paper's annotator architecture at its labelling resolution, and Table 3 at the
# smoke profile end to end under torchrun (NCCL DDP, one process) with mixed precision.
#   bash benchmarks/gpu_checks.sh [LOG]     (LOG: where the output goes besides the terminal; default gpu_checks.log)
set -uo pipefail
log=${1:-gpu_checks.log}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
step() { echo "== $* ($(date -u +%H:%M:%S) UTC)"; }
{
  step machine
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cpus', __import__('os').cpu_count())"
  step pooling share
  timeout 120 "$py" benchmarks/bench_pooling_share.py
  step label-map generation, EfficientNet-L2 at 475 px
  # 512 images a repetition: with fewer, the loader workers' start-up weighs in
  timeout 300 "$py" benchmarks/bench_annotation.py --model tf_efficientnet_l2 --size 475 --batch 64 --batches 8 \
      --repeats 3 --workers 0 8 16 --threads 8
  step Table 3 at smoke, torchrun with one process, AMP on
  runs=$(mktemp -d)
  timeout 240 "$py" -m torch.distributed.run --standalone --nproc_per_node 1 -m repro table3 --profile smoke \
      --set train.amp=true --runs "$runs" --results "$runs/results" && cat "$runs/results/smoke/table3.csv"
  step end
} 2>&1 | tee "$log"
