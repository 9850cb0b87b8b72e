# Shared body of shell_scripts/evaluation/evaluate_<domain>.sh: sourced after the domain script has set
# DOMAIN and its defaults (GUIDE, PAL, GATE_RANK), from the repository root.
NOISE=${NOISE:-0.001}
EXPERIMENT=${EXPERIMENT:-guide${GUIDE}_pal${PAL}_gate_rank${GATE_RANK}_noise${NOISE}}
ROOT=${ROOT:-generated_images/${DOMAIN}}
OUT=${OUT:-results/${DOMAIN}}
INCEPTION=${INCEPTION:-${CPE_INCEPTION_PATH:-}}

python -m cpe.metrics.evaluate --domain "$DOMAIN" --root "$ROOT" --experiment "$EXPERIMENT" --out "$OUT" \
    ${INCEPTION:+--inception "$INCEPTION"} "$@"
