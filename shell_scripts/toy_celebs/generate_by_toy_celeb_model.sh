#!/usr/bin/env bash
# Generate the evaluation images of the toy celebrity-erasure model (the gallery's identities; method.md §4.4).
# Choose the prompt set with GEN_CONFIG (default: the first one):
#   GEN_CONFIG=configs/toy_celebs/gen/erased.yaml     # the 20 erased identities x 5 seeds (100 images)
#   GEN_CONFIG=configs/toy_celebs/gen/remained.yaml   # the 10 identities never erased x 10 seeds (100 images)
#   GEN_CONFIG=configs/toy_celebs/gen/generic.yaml    # "a person" in the same templates (250): the floor (original)
#   GEN_CONFIG=configs/toy_celebs/gen/artist.yaml     # every artist's style prompts (384)
#   GEN_CONFIG=configs/toy_celebs/gen/coco.yaml       # the COCO analogue (300)
# Every variable can be set from the environment, e.g.
#   GEN_CONFIG=configs/toy_celebs/gen/coco.yaml bash shell_scripts/toy_celebs/generate_by_toy_celeb_model.sh
#   ERASERS= bash ...            # the original model (the floor and FD reference) -> <save_root>/original/<subset>
#   GRID=1 ST_IDX=0 END_IDX=10 bash ...  # labelled original-vs-erased PNGs for rows [0, 10) (in <subset>/grids)
# Extra arguments are passed to generate.py (e.g. --num_inference_steps 10).
set -euo pipefail
cd "$(dirname "$0")/../.."

GEN_CONFIG=${GEN_CONFIG:-configs/toy_celebs/gen/erased.yaml}
case "${CONFIG:-}" in *train_context.yaml) GUIDE=${GUIDE:-1.0} ;; *) GUIDE=${GUIDE:-0.3} ;; esac  # train_context.yaml trains at 1.0
PAL=${PAL:-100000.0}
GATE_RANK=${GATE_RANK:-16}
DOMAIN=toy_celebs
EXPERIMENT_PREFIX=toy_celeb
source shell_scripts/common/toy_gallery.sh
set -- --device "$DEVICE" "$@"
source shell_scripts/common/generate.sh
