#!/usr/bin/env bash
# Where the celebrity erasers' gates fire, before generating: leakage of every eraser over the evaluation prompt
# CSVs (erased, remaining celebrities, artists, characters; the text encoder only, no UNet) and gate maps of
# --prompt arguments. Writes $OUT/leakage.{md,json}, $OUT/gate_maps.txt and a PNG per --prompt.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/celebs/inspect_celeb_gates.sh --prompt "a portrait of Adam Driver" --prompt "Adam Sandler"
#   ERASERS=../shared/data/reference/released_resag/celeb bash ...   # the authors' released files
#   LEAKAGE=data/generation_prompts/coco_30k.csv DEVICE=cuda bash ...  # another prompt set (30,000: use a GPU)
#   DATA_DIR=../shared/data/reference/generation_prompts bash ...      # where the prompt CSVs are
# Extra arguments are passed to inspect_gates.py (e.g. --top 10 --max_erasers 20).
set -euo pipefail
cd "$(dirname "$0")/../.."

GUIDE=${GUIDE:-0.3}
PAL=${PAL:-100000.0}
GATE_RANK=${GATE_RANK:-16}
DATA_DIR=${DATA_DIR:-data/generation_prompts}
LEAKAGE=${LEAKAGE:-$DATA_DIR/celebrity_50_erased.csv $DATA_DIR/celebrity_100_remained.csv $DATA_DIR/art_100_remained.csv $DATA_DIR/character_64.csv}
DOMAIN=celebs
EXPERIMENT_PREFIX=celeb
source shell_scripts/common/inspect.sh
