#!/usr/bin/env bash
# Everything GPU-related in one run (for a lent H100/H200): the test suite with CUDA cases, the shapes demo in
# bf16-mixed on the GPU, and the decode benchmark on CUDA. Results go to $OUT (default ./gpu_out).
# Needs torch, timm, transformers, lightning, tokenizers, safetensors and jsonargparse[signatures] importable.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
PY=${PY:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, timm, transformers, lightning; print('torch', torch.__version__, 'timm', timm.__version__,
'transformers', transformers.__version__, 'lightning', lightning.__version__)"
  date -u
} 2>&1 | tee "$OUT/gpu.txt"
timeout 180 $PY -m pytest -q -x tests -p no:cacheprovider 2>&1 | tail -4 | tee "$OUT/pytest.txt"
timeout 240 $PY -m captioner demo --trainer.logger.init_args.save_dir /tmp/gpu_runs \
  --data.init_args.num_workers 6 2>&1 | grep -v "it/s\|Warn" | tail -9 | tee "$OUT/demo.txt"
timeout 150 $PY -m captioner bench decode --device cuda 2>&1 | grep -v Warn | tail -12 | tee "$OUT/bench_cuda.txt"
