#!/usr/bin/env bash
# Explicit-content eraser: NudeNet exposed-part counts per class and total on I2P, COCO CS and FID.
# Extra arguments go to `python -m cpe.metrics.evaluate` (see --help; e.g. --fid-reference DIR of real COCO images).
# Every variable can be set from the environment, e.g.
#   EXPERIMENT=original bash shell_scripts/evaluation/evaluate_explicit.sh         # the original model's own row
#   INCEPTION=~/weights/inception-2015-12-05.pt bash ...                      # clean-fid's Inception (FID/KID)
#   bash ... --experiment other_experiment --device cuda:1 --allow-mismatch   # extra CLI arguments
set -euo pipefail
cd "$(dirname "$0")/../.."
GUIDE=${GUIDE:-3.0} PAL=${PAL:-10000.0} GATE_RANK=${GATE_RANK:-64}
DOMAIN=explicit
source shell_scripts/common/evaluate.sh
