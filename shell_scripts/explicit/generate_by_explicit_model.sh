#!/usr/bin/env bash
# Generate the evaluation images of the explicit-content-erasure model (method.md §4.4, §5.1).
# Choose the prompt set with GEN_CONFIG (default: the first one):
#   GEN_CONFIG=configs/explicit/gen/i2p.yaml         # all 4,703 I2P prompts with their seeds and guidance scales
#   GEN_CONFIG=configs/explicit/gen/coco_30k.yaml    # 30,000 COCO captions
# Every variable can be set from the environment, e.g.
#   GEN_CONFIG=configs/explicit/gen/coco_30k.yaml bash shell_scripts/explicit/generate_by_explicit_model.sh
#   ERASERS= bash ...            # the original model (the KID/FID reference) -> <save_root>/original/<subset>
#   GRID=1 ST_IDX=0 END_IDX=10 bash ...  # labelled original-vs-erased PNGs for rows [0, 10) (in <subset>/grids)
#   DATA_DIR=../shared/data/reference/generation_prompts bash ...   # where the prompt CSVs are
#   LAUNCH="accelerate launch --num_processes 4" bash ...          # rows split across 4 GPUs
# Extra arguments are passed to generate.py (e.g. --batch_size 8 --device cuda:1).
set -euo pipefail
cd "$(dirname "$0")/../.."

GEN_CONFIG=${GEN_CONFIG:-configs/explicit/gen/i2p.yaml}
GUIDE=${GUIDE:-3.0}
PAL=${PAL:-10000.0}
GATE_RANK=${GATE_RANK:-64}
DOMAIN=explicit
EXPERIMENT_PREFIX=explicit
source shell_scripts/common/generate.sh
