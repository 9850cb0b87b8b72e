#!/usr/bin/env bash
# Toy celebrity eraser: Acc_e with its floor, Acc_r, H, style retention on every artist, COCO-analogue FD.
# python -m cpe.metrics.evaluate --domain toy_celebs -> results/toy_celebs/results.{md,json}.
# Needs generated_images/toy_celebs/original/<every subset> and generated_images/toy_celebs/<experiment>/<subsets>
# (generate_by_*_model.sh with ERASERS= and with the erasers). Extra arguments go to cpe.metrics.evaluate.
# Every variable can be set from the environment, e.g.
#   EXPERIMENTS="original my_experiment" bash shell_scripts/toy_celebs/evaluate_toy_celebs.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${CONFIG:-}" in *train_context.yaml) GUIDE=${GUIDE:-1.0} ;; *) GUIDE=${GUIDE:-0.3} ;; esac  # train_context.yaml trains at 1.0
PAL=${PAL:-100000.0} GATE_RANK=${GATE_RANK:-16}
DOMAIN=toy_celebs
source shell_scripts/common/evaluate_toy_gallery.sh
