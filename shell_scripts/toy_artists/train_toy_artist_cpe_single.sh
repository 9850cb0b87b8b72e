#!/usr/bin/env bash
# Train CPE erasers on the gallery model for the toy artist domain (configs/toy_artists/train.yaml; one eraser per concept).
# The concept list holds the 32 artists (the first 10 are the erased set); the domain erases [ST_IDX, END_IDX) = [0, 10) by default.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/toy_artists/train_toy_artist_cpe_single.sh                      # the domain's setup
#   ST_IDX=0 END_IDX=1 bash shell_scripts/toy_artists/train_toy_artist_cpe_single.sh   # the first concept only
#   MODEL=output/gallery/pipeline bash ...                               # another gallery build
# Extra arguments are passed to train_cpe.py (e.g. --overwrite, --set train.iterations=10).
# Output: $OUTPUT/toy_artist_single_guide<G>_pal<P>_gate_rank<R>_noise<N>/<concept>/cpe_last.safetensors
set -euo pipefail
cd "$(dirname "$0")/../.."

CONFIG=${CONFIG:-configs/toy_artists/train.yaml}
GATE_RANK=${GATE_RANK:-16}
GUIDE=${GUIDE:-0.5}
PAL=${PAL:-10000}
END_IDX=${END_IDX:-10}      # exclusive
OUTPUT=${OUTPUT:-output/toy_artists}
source shell_scripts/common/toy_gallery.sh
set -- --threads "$THREADS" "$@"
source shell_scripts/common/train.sh
