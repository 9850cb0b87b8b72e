# Shared body of shell_scripts/attacks/attack_<domain>.sh: sourced after the domain script has set DOMAIN, MODEL,
# ERASERS, TARGET and its defaults, from the repository root. ATTACK picks the config (GEN_CONFIG-style switch).
ATTACK=${ATTACK:-discrete}   # soft | discrete | ringabell
ATTACK_CONFIG=${ATTACK_CONFIG:-configs/attacks/${DOMAIN}/${ATTACK}.yaml}
UCE=${UCE:-}                 # a UCE file (train_uce.py) instead of / besides the CPE erasers
SEED=${SEED:-0}
DATA_DIR=${DATA_DIR:-}
DEVICE=${DEVICE:-}
OUT=${OUT:-output/attacks/${DOMAIN}/${TARGET// /_}/${ATTACK}_seed${SEED}}
LAUNCH=${LAUNCH:-python}

if [ ! -f "$ATTACK_CONFIG" ]; then
    echo "error: ATTACK_CONFIG does not exist: $ATTACK_CONFIG (ATTACK is soft, discrete or ringabell)" >&2
    exit 2
fi
attack_args=(--config "$ATTACK_CONFIG" --model "$MODEL" --target "$TARGET" --seed "$SEED" --out "$OUT")
eraser_args=()
for eraser in $ERASERS; do eraser_args+=(--erasers "$eraser"); done
if [ -n "$UCE" ]; then eraser_args+=(--uce "$UCE"); fi
if [ -n "$DATA_DIR" ]; then attack_args+=(--data_dir "$DATA_DIR"); fi
if [ -n "$DEVICE" ]; then attack_args+=(--device "$DEVICE"); fi

$LAUNCH attack.py "${attack_args[@]}" "${eraser_args[@]}" "$@"
