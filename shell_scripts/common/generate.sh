# Shared body of shell_scripts/<domain>/generate_by_*_model.sh: sourced after the domain script has set
# DOMAIN, EXPERIMENT_PREFIX and its defaults (GEN_CONFIG, GUIDE, PAL, GATE_RANK), from the repository root.
MODEL=${MODEL:-CompVis/stable-diffusion-v1-4}   # hub id or local pipeline folder
NOISE=${NOISE:-0.001}
source shell_scripts/common/variant.sh  # CONFIG -> VARIANT (_context for train_context.yaml)
ERASERS=${ERASERS-output/${DOMAIN}/${EXPERIMENT_PREFIX}_single_guide${GUIDE}_pal${PAL}_gate_rank${GATE_RANK}_noise${NOISE}${VARIANT}}
SAVE_ENV=${SAVE_ENV:-guide${GUIDE}_pal${PAL}_gate_rank${GATE_RANK}_noise${NOISE}${VARIANT}}
DATA_DIR=${DATA_DIR:-}
ST_IDX=${ST_IDX:-}
END_IDX=${END_IDX:-}        # rows [ST_IDX, END_IDX): end exclusive, like training
GRID=${GRID:-0}
LAUNCH=${LAUNCH:-python}

if [ ! -f "$GEN_CONFIG" ]; then
    echo "error: GEN_CONFIG does not exist: $GEN_CONFIG" >&2
    exit 2
fi
args=(--config "$GEN_CONFIG" --model "$MODEL")
if [ -n "$ERASERS" ]; then args+=(--erasers "$ERASERS" --save_env "$SAVE_ENV"); fi
if [ -n "$DATA_DIR" ]; then args+=(--data_dir "$DATA_DIR"); fi
if [ -n "$ST_IDX" ]; then args+=(--first_row "$ST_IDX"); fi
if [ -n "$END_IDX" ]; then args+=(--last_row "$END_IDX"); fi
if [ "$GRID" = 1 ]; then args+=(--grid); fi

$LAUNCH generate.py "${args[@]}" "$@"
