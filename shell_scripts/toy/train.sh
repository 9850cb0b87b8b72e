#!/usr/bin/env bash
# Train CPE erasers on the embedded toy model (src/cpe/toy/assets/pipeline), one concept per index.
#   KIND=shape  (default): configs/toy/concepts_shape.yaml  = circle square triangle cross, neutral "shape"
#   KIND=colour          : configs/toy/concepts_colour.yaml = red green blue yellow purple, neutral "colorful"
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/toy/train.sh                          # erase "circle" (index 0)
#   KIND=colour bash shell_scripts/toy/train.sh              # erase "red"
#   ST_IDX=0 END_IDX=4 bash shell_scripts/toy/train.sh       # all four shapes, one eraser each
# Extra arguments are passed to train_cpe.py (e.g. --overwrite, --set adversarial.enabled=true).
# Output: $OUTPUT/toy_<kind>_guide<G>_pal<P>_gate_rank<R>/<concept>/cpe_last.safetensors
set -euo pipefail
cd "$(dirname "$0")/../.."

KIND=${KIND:-shape}
CONFIG=${CONFIG:-configs/toy/train_${KIND}.yaml}
MODEL=${MODEL:-$(python -c "from cpe.toy import TOY_MODEL_DIR; print(TOY_MODEL_DIR)")}
GATE_RANK=${GATE_RANK:-16}
GUIDE=${GUIDE:-0.3}
PAL=${PAL:-100000}
ST_IDX=${ST_IDX:-0}
END_IDX=${END_IDX:-$((ST_IDX + 1))}   # exclusive
DEVICE=${DEVICE:-cpu}
OUTPUT=${OUTPUT:-output/toy}
THREADS=${THREADS:-2}

if [ ! -f "$CONFIG" ]; then
    echo "error: no training config for KIND=$KIND: $CONFIG (KIND is shape or colour)" >&2
    exit 2
fi
python train_cpe.py \
    --config "$CONFIG" --model "$MODEL" \
    --gate_rank "$GATE_RANK" --guidance "$GUIDE" --pal "$PAL" \
    --st_idx "$ST_IDX" --end_idx "$END_IDX" --device "$DEVICE" --output "$OUTPUT" --threads "$THREADS" "$@"
