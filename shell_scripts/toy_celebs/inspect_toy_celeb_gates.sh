#!/usr/bin/env bash
# Where the gallery model's identity erasers' gates fire, before generating: leakage of every eraser over the domain's
# prompt CSVs (the erased and remaining identities, "a person", artists, the COCO analogue; the text encoder only, no
# UNet: seconds on a CPU) and gate maps of --prompt arguments. Writes $OUT/leakage.{md,json}, $OUT/gate_maps.txt and a
# PNG per --prompt.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/toy_celebs/inspect_toy_celeb_gates.sh --prompt "a portrait of Foumnem"
#   ERASERS=output/toy_celebs/<experiment> LEAKAGE=configs/toy_celebs/prompts/coco.csv bash ...
# Extra arguments are passed to inspect_gates.py (e.g. --top 10 --max_erasers 20).
set -euo pipefail
cd "$(dirname "$0")/../.."

case "${CONFIG:-}" in *train_context.yaml) GUIDE=${GUIDE:-1.0} ;; *) GUIDE=${GUIDE:-0.3} ;; esac  # train_context.yaml trains at 1.0
PAL=${PAL:-100000.0}
GATE_RANK=${GATE_RANK:-16}
LEAKAGE=${LEAKAGE:-configs/toy_celebs/prompts/erased.csv configs/toy_celebs/prompts/remained.csv configs/toy_celebs/prompts/generic.csv configs/toy_celebs/prompts/artist.csv configs/toy_celebs/prompts/coco.csv}
DOMAIN=toy_celebs
EXPERIMENT_PREFIX=toy_celeb
source shell_scripts/common/toy_gallery.sh
source shell_scripts/common/inspect.sh
