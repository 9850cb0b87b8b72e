#!/usr/bin/env bash
# Where the gallery model's artist erasers' gates fire, before generating: leakage of every eraser over the domain's
# prompt CSVs (the erased and remaining artists, identities, neutral styles, the COCO analogue; the text encoder only,
# no UNet: seconds on a CPU) and gate maps of --prompt arguments. Writes $OUT/leakage.{md,json}, $OUT/gate_maps.txt
# and a PNG per --prompt.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/toy_artists/inspect_toy_artist_gates.sh --prompt "a cat in the style of Dikro"
#   ERASERS=output/toy_artists/<experiment> LEAKAGE=configs/toy_artists/prompts/coco.csv bash ...
# Extra arguments are passed to inspect_gates.py (e.g. --top 10 --max_erasers 20).
set -euo pipefail
cd "$(dirname "$0")/../.."

GUIDE=${GUIDE:-0.5}
PAL=${PAL:-10000.0}
GATE_RANK=${GATE_RANK:-16}
LEAKAGE=${LEAKAGE:-configs/toy_artists/prompts/erased.csv configs/toy_artists/prompts/remained.csv configs/toy_artists/prompts/actor.csv configs/toy_artists/prompts/neutral.csv configs/toy_artists/prompts/coco.csv}
DOMAIN=toy_artists
EXPERIMENT_PREFIX=toy_artist
source shell_scripts/common/toy_gallery.sh
source shell_scripts/common/inspect.sh
