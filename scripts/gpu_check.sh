#!/usr/bin/env bash
# Everything GPU-related in one run (for a lent H100/H200). Sections, all by default:
#   tests   the test suite (CUDA cases included)
#   demo    the shapes demo in bf16-mixed on the GPU
#   decode  the decode benchmark vs Hugging Face on CUDA
#   train   training throughput and MFU: ViT-B/16 + 12x768 decoder at 224 px, bf16 (full, frozen, cached;
#           full also with torch.compile)
# Usage: bash scripts/gpu_check.sh [tests] [demo] [decode] [train]; results go to $OUT (default ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
PY=${PY:-python3}
SECTIONS=${*:-tests demo decode train}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, timm, transformers, lightning; print('torch', torch.__version__, 'timm', timm.__version__,
'transformers', transformers.__version__, 'lightning', lightning.__version__)"
  date -u
} 2>&1 | tee "$OUT/gpu.txt"
for s in $SECTIONS; do
  case $s in
    tests) timeout 180 $PY -m pytest -q -x -p no:cacheprovider ${TESTS:-tests} 2>&1 | tail -4 | tee "$OUT/pytest.txt" ;;
    demo) timeout 240 $PY -m captioner demo --trainer.logger.init_args.save_dir /tmp/gpu_runs \
            --data.init_args.num_workers 6 2>&1 | grep -v "it/s\|Warn" | tail -9 | tee "$OUT/demo.txt" ;;
    decode) timeout 150 $PY -m captioner bench decode --device cuda 2>&1 | grep -v Warn | tail -12 \
            | tee "$OUT/bench_decode.txt" ;;
    train) timeout 120 $PY -m captioner bench train 2>&1 | grep -v Warn | tail -6 | tee "$OUT/bench_train.txt"
           timeout 240 $PY -m captioner bench train --modes full --compile 2>&1 | grep -v Warn | tail -3 \
            | tee "$OUT/bench_train_compile.txt" ;;
  esac
done
