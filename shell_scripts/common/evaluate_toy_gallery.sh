# Shared body of shell_scripts/toy_<domain>/evaluate_*.sh: sourced after the domain script has set DOMAIN and its
# defaults (GUIDE, PAL, GATE_RANK), from the repository root. One table with a row per experiment: the original
# model first (its generic/neutral sets give the floors and its images are the FD reference), then the eraser's.
NOISE=${NOISE:-0.001}
source shell_scripts/common/variant.sh  # CONFIG -> VARIANT (_context for train_context.yaml)
EXPERIMENTS=${EXPERIMENTS:-original guide${GUIDE}_pal${PAL}_gate_rank${GATE_RANK}_noise${NOISE}${VARIANT}}
ROOT=${ROOT:-generated_images/${DOMAIN}}
OUT=${OUT:-results/${DOMAIN}}

experiment_args=()
for experiment in $EXPERIMENTS; do experiment_args+=(--experiment "$experiment"); done
python -m cpe.metrics.evaluate --domain "$DOMAIN" --root "$ROOT" "${experiment_args[@]}" --out "$OUT" "$@"
