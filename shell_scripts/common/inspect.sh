# Shared body of shell_scripts/<domain>/inspect_*_gates.sh: sourced after the domain script has set DOMAIN,
# EXPERIMENT_PREFIX, LEAKAGE (prompt CSVs, space-separated) and its defaults (GUIDE, PAL, GATE_RANK), from the
# repository root. Only the model's tokenizer(s) and text encoder(s) load.
MODEL=${MODEL:-CompVis/stable-diffusion-v1-4}   # hub id or local pipeline folder
NOISE=${NOISE:-0.001}
source shell_scripts/common/variant.sh  # CONFIG -> VARIANT (_context for train_context.yaml)
ERASERS=${ERASERS:-output/${DOMAIN}/${EXPERIMENT_PREFIX}_single_guide${GUIDE}_pal${PAL}_gate_rank${GATE_RANK}_noise${NOISE}${VARIANT}}
PROMPTS=${PROMPTS:-}        # a file of prompts to map token by token (a CSV's prompt column, or one per line)
OUT=${OUT:-output/inspect/${DOMAIN}}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-0}

args=(--model "$MODEL" --out "$OUT" --device "$DEVICE" --threads "$THREADS")
for eraser in $ERASERS; do args+=(--erasers "$eraser"); done
for csv in $LEAKAGE; do args+=(--leakage "$csv"); done
if [ -n "$PROMPTS" ]; then args+=(--prompts "$PROMPTS"); fi

python inspect_gates.py "${args[@]}" "$@"
