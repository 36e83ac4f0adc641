#!/usr/bin/env bash
# GPU figures for BENCHMARKS.md: execution provider actually used, images/s per variant/batch.
# Usage: tools/bench_gpu.sh MODELS_DIR [OUT_DIR]
# Needs onnxruntime-gpu importable (and CUDA/cuDNN libraries on LD_LIBRARY_PATH or in the
# nvidia-* wheels next to it). Runs `agent models bench` with providers cuda then cpu.
set -euo pipefail
models_dir=${1:?models dir}
out=${2:-.}
export AGENT_MODELS_DIR=$models_dir
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
for model in efficientnet_lite0 mobilenetv2; do
  for provider in cuda cpu; do
    AGENT_MODELS__PROVIDERS="[\"$provider\"]" python3 -m agent models bench "$model" \
      --variant fp32,int8 --batch 1,8,32 --seconds 4 --json | tee "$out/gpu_bench_${model}_${provider}.json"
  done
done
AGENT_MODELS__PROVIDERS='["tensorrt","cuda","cpu"]' python3 -m agent -v embed examples/gallery --json \
  | tee "$out/gpu_embed.json"
