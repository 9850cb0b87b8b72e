#!/usr/bin/env bash
# Train CPE erasers for the 100 artists (method.md §2.9). Every variable can be set from the environment:
#   MODEL=./my_sd14 ST_IDX=0 END_IDX=10 bash shell_scripts/artists/train_artist_cpe_single.sh
# Extra arguments are passed to train_cpe.py (e.g. --resume, --overwrite, --set train.iterations=10).
# Several GPUs: LAUNCH="accelerate launch --num_processes 4" bash shell_scripts/artists/train_artist_cpe_single.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

CONFIG=${CONFIG:-configs/artists/train.yaml}
GATE_RANK=${GATE_RANK:-16}
GUIDE=${GUIDE:-0.5}
PAL=${PAL:-10000}
END_IDX=${END_IDX:-100}      # exclusive
OUTPUT=${OUTPUT:-output/artists}
source shell_scripts/common/train.sh
