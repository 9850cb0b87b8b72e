#!/usr/bin/env bash
# Attack a celebrity eraser on Stable Diffusion v1.4 (white-box attacks need a GPU for reasonable budgets).
# Choose the attack with ATTACK (default: the first one): discrete | soft | ringabell (configs/attacks/celebs/).
# Every variable can be set from the environment, e.g.
#   TARGET="Adam Driver" bash shell_scripts/attacks/attack_celebs.sh
#   ATTACK=ringabell TARGET="Adam Driver" bash ...          # black box: loads only the tokenizer and text encoder
#   UCE=output/celebs/uce_lamb0.1_erase1.0_preserve0.1/adam_driver/uce.safetensors ERASERS= bash ...
# The attacked prompts land in $OUT/celebrity_50_erased.csv; render them with the same eraser and score them
# as usual (GCD, shell_scripts/evaluation/evaluate_celebs.sh):
#   DATA_DIR=$OUT SAVE_ENV=attack_discrete GEN_CONFIG=configs/celebs/gen/erased.yaml \
#       bash shell_scripts/celebs/generate_by_celeb_model.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DOMAIN=celebs
TARGET=${TARGET:-Adam Driver}
MODEL=${MODEL:-CompVis/stable-diffusion-v1-4}   # hub id or local pipeline folder
GUIDE=${GUIDE:-0.3}
PAL=${PAL:-100000.0}
GATE_RANK=${GATE_RANK:-16}
NOISE=${NOISE:-0.001}
ERASERS=${ERASERS-output/celebs/celeb_single_guide${GUIDE}_pal${PAL}_gate_rank${GATE_RANK}_noise${NOISE}}
DATA_DIR=${DATA_DIR:-data/generation_prompts}

source shell_scripts/common/attack.sh "$@"
