#!/usr/bin/env bash
# Generate the evaluation images of the celebrity-erasure model (method.md §4.4, §5.1).
# Choose the prompt set with GEN_CONFIG (default: the first one):
#   GEN_CONFIG=configs/celebs/gen/erased.yaml      # the 50 erased celebrities x 5 templates x seeds 1-5 (1,250 images)
#   GEN_CONFIG=configs/celebs/gen/remained.yaml    # 100 remaining celebrities (2,500 images)
#   GEN_CONFIG=configs/celebs/gen/artist.yaml      # 100 artists (2,500 images)
#   GEN_CONFIG=configs/celebs/gen/character.yaml   # 64 characters, 325 prompts x 5 images (1,625)
#   GEN_CONFIG=configs/celebs/gen/coco_30k.yaml    # 30,000 COCO captions
# Every variable can be set from the environment, e.g.
#   GEN_CONFIG=configs/celebs/gen/coco_30k.yaml bash shell_scripts/celebs/generate_by_celeb_model.sh
#   ERASERS= bash ...            # the original model (the KID/FID reference) -> <save_root>/original/<subset>
#   GRID=1 ST_IDX=0 END_IDX=10 bash ...  # labelled original-vs-erased PNGs for rows [0, 10) (in <subset>/grids)
#   DATA_DIR=../shared/data/reference/generation_prompts bash ...   # where the prompt CSVs are
#   LAUNCH="accelerate launch --num_processes 4" bash ...          # rows split across 4 GPUs
# Extra arguments are passed to generate.py (e.g. --batch_size 8 --device cuda:1).
set -euo pipefail
cd "$(dirname "$0")/../.."

GEN_CONFIG=${GEN_CONFIG:-configs/celebs/gen/erased.yaml}
GUIDE=${GUIDE:-0.3}
PAL=${PAL:-100000.0}
GATE_RANK=${GATE_RANK:-16}
DOMAIN=celebs
EXPERIMENT_PREFIX=celeb
source shell_scripts/common/generate.sh
