#!/usr/bin/env bash
# Toy explicit eraser: mark counts on the I2P analogue (all rows, erase-word rows, other-word rows), benign marks and FD on the COCO analogue.
# python -m cpe.metrics.evaluate --domain toy_explicit -> results/toy_explicit/results.{md,json}.
# Needs generated_images/toy_explicit/original/<every subset> and generated_images/toy_explicit/<experiment>/<subsets>
# (generate_by_*_model.sh with ERASERS= and with the erasers). Extra arguments go to cpe.metrics.evaluate.
# Every variable can be set from the environment, e.g.
#   EXPERIMENTS="original my_experiment" bash shell_scripts/toy_explicit/evaluate_toy_explicit.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
GUIDE=${GUIDE:-3.0} PAL=${PAL:-10000.0} GATE_RANK=${GATE_RANK:-64}
DOMAIN=toy_explicit
source shell_scripts/common/evaluate_toy_gallery.sh
