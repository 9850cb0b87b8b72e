#!/usr/bin/env bash
# Artist eraser: CLIP_e / CLIP_r, KID on remaining artists / celebrities (actor) / characters, COCO CS and FID.
# Extra arguments go to `python -m cpe.metrics.evaluate` (see --help; e.g. --fid-reference DIR of real COCO images).
# Every variable can be set from the environment, e.g.
#   EXPERIMENT=original bash shell_scripts/evaluation/evaluate_artists.sh         # the original model's own row
#   INCEPTION=~/weights/inception-2015-12-05.pt bash ...                      # clean-fid's Inception (FID/KID)
#   bash ... --experiment other_experiment --device cuda:1 --allow-mismatch   # extra CLI arguments
set -euo pipefail
cd "$(dirname "$0")/../.."
GUIDE=${GUIDE:-0.5} PAL=${PAL:-10000.0} GATE_RANK=${GATE_RANK:-16}
DOMAIN=artists
source shell_scripts/common/evaluate.sh
