# Shared body of shell_scripts/<domain>/train_*_cpe_single.sh: sourced after the domain script has set
# CONFIG, GATE_RANK, GUIDE, PAL, END_IDX and OUTPUT defaults, from the repository root.
MODEL=${MODEL:-CompVis/stable-diffusion-v1-4}   # hub id or local pipeline folder
NOISE=${NOISE:-0.001}
ST_IDX=${ST_IDX:-0}
CONCEPT_BATCH=${CONCEPT_BATCH:-1}
DEVICE=${DEVICE:-auto}
LAUNCH=${LAUNCH:-python}

$LAUNCH train_cpe.py \
    --config "$CONFIG" --model "$MODEL" \
    --gate_rank "$GATE_RANK" --guidance "$GUIDE" --pal "$PAL" --noise "$NOISE" \
    --st_idx "$ST_IDX" --end_idx "$END_IDX" \
    --concept_batch "$CONCEPT_BATCH" --device "$DEVICE" --output "$OUTPUT" "$@"
