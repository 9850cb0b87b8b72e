#!/usr/bin/env bash
# Generate the toy evaluation images, for the original model and for the erased one (method.md §4).
# TARGETS names the erased concepts; the prompt CSVs for them are written first (python -m cpe.toy.prompt_sets).
# Choose the prompt set with GEN_CONFIG (default: the first one):
#   GEN_CONFIG=configs/toy/gen/erased.yaml      # prompts naming a target (>= 100 images per target)
#   GEN_CONFIG=configs/toy/gen/remaining.yaml   # prompts naming no target (>= 96 images)
#   GEN_CONFIG=configs/toy/gen/generic.yaml     # "a {colour} shape" / "a colorful {shape}": the floor of Acc_e
#   GEN_CONFIG=configs/toy/gen/all.yaml         # every pair and generic prompt, 25 seeds (725 images)
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/toy/generate.sh                                   # circle eraser, erased set
#   ERASERS= GEN_CONFIG=configs/toy/gen/generic.yaml bash ...            # the original model -> .../original/
#   TARGETS="circle red" ERASERS="output/toy/toy_shape_guide0.3_pal100000.0_gate_rank16/circle \
#       output/toy/toy_colour_guide0.3_pal100000.0_gate_rank16/red" bash ...   # two erasers merged
#   GRID=1 bash ...                                                      # labelled original-vs-erased PNG per prompt
# Images go to generated_images/toy/<targets joined by +>/{original,cpe}/<subset>/ with manifest.jsonl.
# Extra arguments are passed to generate.py (e.g. --num_inference_steps 10).
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGETS=${TARGETS:-circle}
GEN_CONFIG=${GEN_CONFIG:-configs/toy/gen/erased.yaml}
MODEL=${MODEL:-$(python -c "from cpe.toy import TOY_MODEL_DIR; print(TOY_MODEL_DIR)")}
ERASERS=${ERASERS-output/toy/toy_shape_guide0.3_pal100000.0_gate_rank16/circle}   # empty = the original model
TAG=${TAG:-${TARGETS// /+}}
PROMPTS=${PROMPTS:-output/toy/prompts/$TAG}
SAVE_ROOT=${SAVE_ROOT:-generated_images/toy/$TAG}
GRID=${GRID:-0}

if [ ! -f "$GEN_CONFIG" ]; then
    echo "error: GEN_CONFIG does not exist: $GEN_CONFIG" >&2
    exit 2
fi
# shellcheck disable=SC2086  # TARGETS and ERASERS are space-separated lists
python -m cpe.toy.prompt_sets --targets $TARGETS --out "$PROMPTS" > /dev/null
args=(--config "$GEN_CONFIG" --model "$MODEL" --data_dir "$PROMPTS" --save_root "$SAVE_ROOT" --device cpu)
if [ -n "$ERASERS" ]; then
    for eraser in $ERASERS; do args+=(--erasers "$eraser"); done
    args+=(--experiment cpe)
else
    args+=(--experiment original)
fi
if [ "$GRID" = 1 ]; then args+=(--grid); fi

python generate.py "${args[@]}" "$@"
