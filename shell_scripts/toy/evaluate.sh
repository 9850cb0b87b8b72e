#!/usr/bin/env bash
# Score toy erasure from the generated images (cpe.metrics.toy): Acc_e with its floor, Acc_r, H, the other
# attribute's accuracy and FD_r, each beside the original model's, and collateral damage to the other attribute
# on the target prompts (per-seed agreement, FD_other); writes results.json, results.md, grid.png.
# Needs, under generated_images/toy/<TAG>: original/{erased,remaining,generic} and cpe/{erased,remaining}
# (shell_scripts/toy/generate.sh). Every variable can be set from the environment, e.g.
#   TARGETS="circle red" bash shell_scripts/toy/evaluate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGETS=${TARGETS:-circle}
TAG=${TAG:-${TARGETS// /+}}
ROOT=${ROOT:-generated_images/toy/$TAG}
OUT=${OUT:-$ROOT/results}

# shellcheck disable=SC2086
python -m cpe.metrics.toy --targets $TARGETS \
    --erased "$ROOT/cpe/erased" "$ROOT/cpe/remaining" \
    --original "$ROOT/original/erased" "$ROOT/original/remaining" "$ROOT/original/generic" \
    --out "$OUT" "$@"
echo "table: $OUT/results.md  grid: $OUT/grid.png"
