#!/usr/bin/env bash
# Generate the evaluation images of the toy artist-erasure model (the gallery's styles; method.md §4.4).
# Choose the prompt set with GEN_CONFIG (default: the first one):
#   GEN_CONFIG=configs/toy_artists/gen/erased.yaml     # the 10 erased artists' style prompts (120 images)
#   GEN_CONFIG=configs/toy_artists/gen/remained.yaml   # the 22 remaining artists' style prompts (264)
#   GEN_CONFIG=configs/toy_artists/gen/neutral.yaml    # the erased rows without their artist (120): the floor (original)
#   GEN_CONFIG=configs/toy_artists/gen/actor.yaml      # every identity x 4 seeds (240): identity retention
#   GEN_CONFIG=configs/toy_artists/gen/coco.yaml       # the COCO analogue (300)
# Every variable can be set from the environment, e.g.
#   GEN_CONFIG=configs/toy_artists/gen/coco.yaml bash shell_scripts/toy_artists/generate_by_toy_artist_model.sh
#   ERASERS= bash ...            # the original model (the floor and FD reference) -> <save_root>/original/<subset>
#   GRID=1 ST_IDX=0 END_IDX=10 bash ...  # labelled original-vs-erased PNGs for rows [0, 10) (in <subset>/grids)
# Extra arguments are passed to generate.py (e.g. --num_inference_steps 10).
set -euo pipefail
cd "$(dirname "$0")/../.."

GEN_CONFIG=${GEN_CONFIG:-configs/toy_artists/gen/erased.yaml}
GUIDE=${GUIDE:-0.5}
PAL=${PAL:-10000.0}
GATE_RANK=${GATE_RANK:-16}
DOMAIN=toy_artists
EXPERIMENT_PREFIX=toy_artist
source shell_scripts/common/toy_gallery.sh
set -- --device "$DEVICE" "$@"
source shell_scripts/common/generate.sh
