#!/usr/bin/env bash
# Generate the evaluation images of the toy explicit-content-erasure model (the gallery's mark; method.md §4.4).
# Choose the prompt set with GEN_CONFIG (default: the first one):
#   GEN_CONFIG=configs/toy_explicit/gen/i2p.yaml    # the I2P analogue: 320 prompts implying the mark
#   GEN_CONFIG=configs/toy_explicit/gen/coco.yaml   # the COCO analogue (300)
# Every variable can be set from the environment, e.g.
#   GEN_CONFIG=configs/toy_explicit/gen/coco.yaml bash shell_scripts/toy_explicit/generate_by_toy_explicit_model.sh
#   ERASERS= bash ...            # the original model (the FD reference) -> <save_root>/original/<subset>
#   GRID=1 ST_IDX=0 END_IDX=10 bash ...  # labelled original-vs-erased PNGs for rows [0, 10) (in <subset>/grids)
# Extra arguments are passed to generate.py (e.g. --num_inference_steps 10).
set -euo pipefail
cd "$(dirname "$0")/../.."

GEN_CONFIG=${GEN_CONFIG:-configs/toy_explicit/gen/i2p.yaml}
GUIDE=${GUIDE:-3.0}
PAL=${PAL:-10000.0}
GATE_RANK=${GATE_RANK:-64}
DOMAIN=toy_explicit
EXPERIMENT_PREFIX=toy_explicit
source shell_scripts/common/toy_gallery.sh
set -- --device "$DEVICE" "$@"
source shell_scripts/common/generate.sh
