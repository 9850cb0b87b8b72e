#!/usr/bin/env bash
# Celebrity eraser: GCD Acc_e / Acc_r and H, KID on remaining celebrities / artists / characters, COCO CS and FID.
# GCD runs outside this environment: a first run writes results/celebs/<experiment>/gcd_inputs_{erased,remained}.csv;
# run shell_scripts/evaluation/gcd_predict.py on them in the GCD environment, then rerun this script (cached
# metrics are reused). Extra arguments go to `python -m cpe.metrics.evaluate` (see --help).
# Every variable can be set from the environment, e.g.
#   EXPERIMENT=original bash shell_scripts/evaluation/evaluate_celebs.sh         # the original model's own row
#   INCEPTION=~/weights/inception-2015-12-05.pt bash ...                      # clean-fid's Inception (FID/KID)
#   bash ... --experiment other_experiment --device cuda:1 --allow-mismatch   # extra CLI arguments
set -euo pipefail
cd "$(dirname "$0")/../.."
GUIDE=${GUIDE:-0.3} PAL=${PAL:-100000.0} GATE_RANK=${GATE_RANK:-16}
DOMAIN=celebs
source shell_scripts/common/evaluate.sh
