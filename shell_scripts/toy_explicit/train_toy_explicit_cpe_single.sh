#!/usr/bin/env bash
# Train CPE erasers on the gallery model for the toy explicit-content domain (configs/toy_explicit/train.yaml; one eraser per concept).
# The concept list holds the 4 erase words of the mark; the domain erases [ST_IDX, END_IDX) = [0, 4) by default.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/toy_explicit/train_toy_explicit_cpe_single.sh                      # the domain's setup
#   ST_IDX=0 END_IDX=1 bash shell_scripts/toy_explicit/train_toy_explicit_cpe_single.sh   # the first concept only
#   MODEL=output/gallery/pipeline bash ...                               # another gallery build
# Extra arguments are passed to train_cpe.py (e.g. --overwrite, --set train.iterations=10).
# Output: $OUTPUT/toy_explicit_single_guide<G>_pal<P>_gate_rank<R>_noise<N>/<concept>/cpe_last.safetensors
set -euo pipefail
cd "$(dirname "$0")/../.."

CONFIG=${CONFIG:-configs/toy_explicit/train.yaml}
GATE_RANK=${GATE_RANK:-64}
GUIDE=${GUIDE:-3.0}
PAL=${PAL:-10000}
END_IDX=${END_IDX:-4}      # exclusive
OUTPUT=${OUTPUT:-output/toy_explicit}
source shell_scripts/common/toy_gallery.sh
set -- --threads "$THREADS" "$@"
source shell_scripts/common/train.sh
