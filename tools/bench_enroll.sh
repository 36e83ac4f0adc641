#!/usr/bin/env bash
# Enrollment speed: first enrollment vs re-enrolling the unchanged folder in a new process.
# Usage: tools/bench_enroll.sh [DIR] [MODEL] [VARIANT]   (default: ../shared/data/retrieval/gallery)
# Each run is a fresh `agent enroll` process; state (gallery + embedding cache) lives in a temp
# dir. Prints seconds, inferences and cache hits of: 1) first enrollment, 2) the same command
# again (unchanged files: hash + compare, no inference), 3) a new gallery from the same folder
# (served by the persistent embedding cache).
set -euo pipefail
DIR=${1:-../shared/data/retrieval/gallery}
MODEL=${2:-efficientnet_lite0}
VARIANT=${3:-int8}
AGENT=${AGENT:-.venv/bin/agent}
STATE=$(mktemp -d)
trap 'rm -rf "$STATE"' EXIT
export XDG_DATA_HOME=$STATE AGENT_MODELS_DIR=${AGENT_MODELS_DIR:-../shared/models}
run() {
  local start end
  start=$(date +%s.%N)
  "$AGENT" -q enroll "$DIR" -g "$STATE/$1" -m "$MODEL" --variant "$VARIANT" --json 2>/dev/null \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['added'], r['unchanged'], r['inferences'], r['cache_hits'], round(r['seconds'], 3), end=' ')"
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 2))"
}
echo "run added unchanged inferences cache_hits enroll_s wall_s"
echo "first $(run g1)"
echo "rerun $(run g1)"
echo "new_gallery_cached $(run g2)"
