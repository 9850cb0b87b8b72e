#!/usr/bin/env bash
# Where the artist erasers' gates fire, before generating: leakage of every eraser over the evaluation prompt
# CSVs (erased, remaining artists, celebrities, characters; the text encoder only, no UNet) and gate maps of
# --prompt arguments. Writes $OUT/leakage.{md,json}, $OUT/gate_maps.txt and a PNG per --prompt.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/artists/inspect_artist_gates.sh --prompt "a sunset in the style of Claude Monet"
#   ERASERS=../shared/data/reference/released_resag/artist bash ...   # the authors' released files
#   DATA_DIR=../shared/data/reference/generation_prompts bash ...       # where the prompt CSVs are
# Extra arguments are passed to inspect_gates.py (e.g. --top 10 --max_erasers 20).
set -euo pipefail
cd "$(dirname "$0")/../.."

GUIDE=${GUIDE:-0.5}
PAL=${PAL:-10000.0}
GATE_RANK=${GATE_RANK:-16}
DATA_DIR=${DATA_DIR:-data/generation_prompts}
LEAKAGE=${LEAKAGE:-$DATA_DIR/art_100_erased.csv $DATA_DIR/art_100_remained.csv $DATA_DIR/celebrity_100_remained.csv $DATA_DIR/character_64.csv}
DOMAIN=artists
EXPERIMENT_PREFIX=artist
source shell_scripts/common/inspect.sh
