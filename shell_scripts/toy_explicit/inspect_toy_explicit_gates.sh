#!/usr/bin/env bash
# Where the gallery model's mark-word erasers' gates fire, before generating: leakage of every eraser over the
# domain's prompt CSVs (the I2P and COCO analogues; the text encoder only, no UNet: seconds on a CPU) and gate maps of
# --prompt arguments. Writes $OUT/leakage.{md,json}, $OUT/gate_maps.txt and a PNG per --prompt.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/toy_explicit/inspect_toy_explicit_gates.sh --prompt "a nude statue in a museum"
#   ERASERS=output/toy_explicit/<experiment> LEAKAGE=configs/toy_explicit/prompts/coco.csv bash ...
# Extra arguments are passed to inspect_gates.py (e.g. --top 10 --max_erasers 20).
set -euo pipefail
cd "$(dirname "$0")/../.."

GUIDE=${GUIDE:-3.0}
PAL=${PAL:-10000.0}
GATE_RANK=${GATE_RANK:-64}
LEAKAGE=${LEAKAGE:-configs/toy_explicit/prompts/i2p.csv configs/toy_explicit/prompts/coco.csv}
DOMAIN=toy_explicit
EXPERIMENT_PREFIX=toy_explicit
source shell_scripts/common/toy_gallery.sh
source shell_scripts/common/inspect.sh
