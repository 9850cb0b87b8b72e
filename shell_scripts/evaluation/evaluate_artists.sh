#!/usr/bin/env bash
# Artist eraser: CLIP_e / CLIP_r, KID on remaining artists / celebrities (actor) / characters, COCO CS and FID.
# Extra arguments go to `python -m cpe.metrics.evaluate` (e.g. --experiment original, --fid-reference DIR).
set -euo pipefail
GUIDE=${GUIDE:-0.5} PAL=${PAL:-10000.0} GATE_RANK=${GATE_RANK:-16} NOISE=${NOISE:-0.001}
EXPERIMENT=${EXPERIMENT:-guide${GUIDE}_pal${PAL}_gate_rank${GATE_RANK}_noise${NOISE}}
ROOT=${ROOT:-generated_images/artists}
OUT=${OUT:-results/artists}
INCEPTION=${INCEPTION:-${CPE_INCEPTION_PATH:-}}

python -m cpe.metrics.evaluate --domain artists --root "$ROOT" --experiment "$EXPERIMENT" --out "$OUT" \
    ${INCEPTION:+--inception "$INCEPTION"} "$@"
