#!/usr/bin/env bash
# Everything GPU-related in one run (for a lent H100/H200). Sections, all by default:
#   tests   the test suite (CUDA cases included)
#   demo    the shapes demo in bf16-mixed on the GPU
#   decode  the decode benchmark vs Hugging Face on CUDA
#   lmdecode  our decoding of SmolLM2-135M's shapes (gates at zero) vs LlamaForCausalLM.generate on CUDA
#   cpucap  the CPU captioning benchmark (int8, bf16) on the lent machine's host CPU, which usually has
#           AVX512-BF16/AMX (the dev machine's AVX2 CPU has neither), with 16 threads
#   train   training throughput and MFU: ViT-B/16 + 12x768 decoder at 224 px, bf16, batch 128: full, frozen,
#           cached features, each with and without torch.compile
#   epoch   frozen-encoder epochs over 4096 640x480 JPEGs through Lightning, compiled: online vs feature cache
#   compile the shapes config for 200 steps with model.compile (inductor), fused AdamW and clipping
#   fsdp    the shapes config for 50 steps under Lightning's FSDP strategy (one GPU: a smoke test)
# Usage: bash scripts/gpu_check.sh [tests] [demo] [decode] [lmdecode] [cpucap] [train] [epoch] [compile] [fsdp];
# results go to $OUT (default ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
PY=${PY:-python3}
SECTIONS=${*:-tests demo decode lmdecode cpucap train epoch compile fsdp}
SHORT="--trainer.logger.init_args.save_dir /tmp/gpu_runs --data.init_args.num_workers 6 --trainer.val_check_interval"
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
    decode) timeout 150 $PY scripts/benchmark.py decode --device cuda 2>&1 | grep -v Warn | tail -12 \
            | tee "$OUT/bench_decode.txt" ;;
    lmdecode) timeout 150 $PY scripts/benchmark.py decode --decoder llama --device cuda 2>&1 | grep -v "Warn\|Loading\|Writing" \
            | tee "$OUT/bench_decode_llama.txt" ;;
    cpucap) lscpu | grep -i "model name\|flags" | grep -o "Model name.*\|avx512_bf16\|amx_bf16" | sort -u \
            | tee "$OUT/bench_caption_cpu.txt"
            CUDA_VISIBLE_DEVICES= timeout 150 $PY scripts/benchmark.py caption 2>&1 | grep -v Warn \
            | tee -a "$OUT/bench_caption_cpu.txt" ;;
    train) timeout 290 $PY scripts/benchmark.py train --compile 2>&1 | grep -v Warn | tee "$OUT/bench_train.txt" ;;
    epoch) timeout 170 $PY scripts/benchmark.py epoch --workers 12 --epochs 3 --compile 2>&1 | grep -v "it/s\|Warn" \
            | tee "$OUT/bench_epoch.txt" | grep "^|\|^device\|faster\|wrote\|Error" ;;
    compile) timeout 100 $PY -m captioner fit --config configs/shapes.yaml --model.compile true --trainer.max_steps 200 \
            $SHORT 200 2>&1 | grep -v "it/s\|Warn" | tee "$OUT/compile_fit.txt" | tail -8 ;;
    fsdp) timeout 60 $PY -m captioner fit --config configs/shapes.yaml --trainer.strategy fsdp --trainer.max_steps 50 \
            $SHORT 50 2>&1 | grep -v "it/s\|Warn" | tee "$OUT/fsdp_fit.txt" | tail -8 ;;
  esac
done
