#!/usr/bin/env bash
# Ablation of the retrieval quality features with `agent eval` (one line per setting).
# Usage: tools/eval_features.sh SET_DIR [MODEL] [VARIANT]   e.g. ../shared/data/retrieval
# SET_DIR has gallery/<identity>/<image> and queries/<identity>/<image>. Settings are switched
# through AGENT_GALLERY__* environment overrides; embeddings are cached across the runs.
set -euo pipefail
SET=$1
MODEL=${2:-efficientnet_lite0}
VARIANT=${3:-fp32}
AGENT=${AGENT:-.venv/bin/agent}
export AGENT_MODELS_DIR=${AGENT_MODELS_DIR:-../shared/models}
run() {
  local name=$1
  shift
  env "$@" "$AGENT" -q eval -g "$SET/gallery" -Q "$SET/queries" -m "$MODEL" --variant "$VARIANT" \
    ${PLAIN:+--plain} --json 2>/dev/null | python3 -c "
import json, sys
r = json.load(sys.stdin)
print(f\"{'$name':28s} R@1 {r['recall@1']:.4f}  idR@5 {r['identity_recall@5']:.4f}  \"
      f\"P@5 {r['precision@5']:.4f}  mAP {r['mAP']:.4f}  gap {r['gap']:.3f}\")"
}
PLAIN=1 run "plain"
run "flip only" AGENT_GALLERY__WHITEN_DIM=0 AGENT_GALLERY__IDENTITY_WEIGHT=0
run "flip + flipped queries" AGENT_GALLERY__WHITEN_DIM=0 AGENT_GALLERY__IDENTITY_WEIGHT=0 AGENT_GALLERY__FLIP_QUERIES=true
run "flip + whiten 128" AGENT_GALLERY__IDENTITY_WEIGHT=0
run "flip + identity 0.9" AGENT_GALLERY__WHITEN_DIM=0
run "flip + whiten 64 + id 0.9" AGENT_GALLERY__WHITEN_DIM=64
run "all (default)" AGENT_GALLERY__FLIP=true
