#!/usr/bin/env bash
# Train CPE erasers for the 4 explicit words (method.md §2.9). Every variable can be set from the environment:
#   MODEL=./my_sd14 ST_IDX=0 END_IDX=10 bash shell_scripts/explicit/train_explicit_cpe_single.sh
# Extra arguments are passed to train_cpe.py (e.g. --resume, --overwrite, --set train.iterations=10).
# Several GPUs: LAUNCH="accelerate launch --num_processes 4" bash shell_scripts/explicit/train_explicit_cpe_single.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

CONFIG=${CONFIG:-configs/explicit/train.yaml}
GATE_RANK=${GATE_RANK:-64}
GUIDE=${GUIDE:-3.0}
PAL=${PAL:-10000}
END_IDX=${END_IDX:-4}      # exclusive
OUTPUT=${OUTPUT:-output/explicit}
source shell_scripts/common/train.sh
