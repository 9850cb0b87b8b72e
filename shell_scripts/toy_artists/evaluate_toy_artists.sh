#!/usr/bin/env bash
# Toy artist eraser: Style_e with its floor, Style_r, identity retention, COCO-analogue FD.
# python -m cpe.metrics.evaluate --domain toy_artists -> results/toy_artists/results.{md,json}.
# Needs generated_images/toy_artists/original/<every subset> and generated_images/toy_artists/<experiment>/<subsets>
# (generate_by_*_model.sh with ERASERS= and with the erasers). Extra arguments go to cpe.metrics.evaluate.
# Every variable can be set from the environment, e.g.
#   EXPERIMENTS="original my_experiment" bash shell_scripts/toy_artists/evaluate_toy_artists.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
GUIDE=${GUIDE:-0.5} PAL=${PAL:-10000.0} GATE_RANK=${GATE_RANK:-16}
DOMAIN=toy_artists
source shell_scripts/common/evaluate_toy_gallery.sh
