#!/usr/bin/env bash
# Train CPE erasers on the gallery model for the toy celebrity domain (configs/toy_celebs/train.yaml; one eraser per concept).
# The concept list holds the 60 identities (the first 20 are the erased set); the domain erases [ST_IDX, END_IDX) = [0, 20) by default.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/toy_celebs/train_toy_celeb_cpe_single.sh                      # the domain's setup
#   ST_IDX=0 END_IDX=1 bash shell_scripts/toy_celebs/train_toy_celeb_cpe_single.sh   # the first concept only
#   MODEL=output/gallery/pipeline bash ...                               # another gallery build
# Extra arguments are passed to train_cpe.py (e.g. --overwrite, --set train.iterations=10).
# Output: $OUTPUT/toy_celeb_single_guide<G>_pal<P>_gate_rank<R>_noise<N>/<concept>/cpe_last.safetensors
set -euo pipefail
cd "$(dirname "$0")/../.."

CONFIG=${CONFIG:-configs/toy_celebs/train.yaml}
GATE_RANK=${GATE_RANK:-16}
case "${CONFIG:-}" in *train_context.yaml) GUIDE=${GUIDE:-1.0} ;; *) GUIDE=${GUIDE:-0.3} ;; esac  # train_context.yaml trains at 1.0
PAL=${PAL:-100000}
END_IDX=${END_IDX:-20}      # exclusive
OUTPUT=${OUTPUT:-output/toy_celebs}
source shell_scripts/common/toy_gallery.sh
set -- --threads "$THREADS" "$@"
source shell_scripts/common/train.sh
