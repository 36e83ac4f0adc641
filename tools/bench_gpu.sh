#!/usr/bin/env bash
# GPU figures for BENCHMARKS.md (issue 5 matrix), one command on a box with an NVIDIA GPU.
# Usage: tools/bench_gpu.sh MODELS_DIR [OUT_DIR]
#
# 1. bare inference, images/s at batch 1/8/32, for each model file present in MODELS_DIR
#    (efficientnet_lite0, mobilenetv2, resnet50; random weights are fine for speed):
#      cuda          fp32 and int8 variants on the CUDA provider
#      trt-fp32      TensorRT with fp16 off;  trt-fp16: fp16 on (fp32 file);  trt-int8: QDQ file
#    each JSON also records the nodes per provider, so a partial CPU fallback shows;
# 2. the running agent on 8 looped vtest.avi sources (tools/bench_agent.py --sources 8), on
#    TensorRT then CUDA;
# 3. person mode on 4 and 8 copies of vtest.avi: SSDLite shared and batched across the sources,
#    unbatched, and HOG (tools/bench_detect.py), on TensorRT then CUDA.
# Needs onnxruntime-gpu importable, with CUDA/cuDNN (and TensorRT for the trt rows) loadable.
set -euo pipefail
models_dir=${1:?models dir}
out=${2:-.}
mkdir -p "$out"
export AGENT_MODELS_DIR=$models_dir
export AGENT_STATE_DIR=${AGENT_STATE_DIR:-$(mktemp -d)}   # engines are built once per run here
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
bench() {  # name providers fp16 variants
  local model=$1 tag=$2 providers=$3 fp16=$4 variants=$5
  AGENT_MODELS__PROVIDERS="$providers" AGENT_MODELS__TRT_FP16=$fp16 python3 -m agent \
    models bench "$model" --variant "$variants" --batch 1,8,32 --seconds 4 --json \
    | tee "$out/gpu_bench_${model}_${tag}.json"
}
for model in efficientnet_lite0 mobilenetv2 resnet50; do
  present=$(python3 -m agent models info "$model" --json 2>/dev/null \
    | python3 -c "import json,sys; d=json.load(sys.stdin); print(','.join(k for k, f in d['files'].items() if f['path']))" || true)
  [ -n "$present" ] || { echo "skip $model: no file in $models_dir"; continue; }
  fp32_int8=$(echo "$present" | tr ',' '\n' | grep -E '^(fp32|int8)$' | paste -sd, -)
  bench "$model" cuda '["cuda"]' true "$fp32_int8"
  if echo "$present" | grep -qw fp32; then
    bench "$model" trt-fp32 '["tensorrt"]' false fp32
    bench "$model" trt-fp16 '["tensorrt"]' true fp32
  fi
  if echo "$present" | grep -qw int8; then
    bench "$model" trt-int8 '["tensorrt"]' true int8
  fi
done
for providers in '["tensorrt","cuda"]' '["cuda"]'; do
  AGENT_MODELS__PROVIDERS="$providers" python3 tools/bench_agent.py --sources 8 --seconds 30 \
    | tee -a "$out/gpu_agent_8_sources.txt"
done
for providers in '["tensorrt","cuda"]' '["cuda"]'; do
  for sources in 4 8; do
    AGENT_MODELS__PROVIDERS="$providers" python3 tools/bench_detect.py --sources "$sources" \
      --frames 300 | tee -a "$out/gpu_detect_${sources}_sources.json"
  done
done
