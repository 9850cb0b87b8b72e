#!/usr/bin/env bash
# The toy quick start (a few minutes on 2 CPU cores): erase one concept from the shipped toy model, generate
# with the original and the erased model, measure, and write the original-vs-erased grid.
#   bash shell_scripts/toy/quickstart.sh                      # erase "circle" (neutral "shape")
#   KIND=colour TARGET=red bash shell_scripts/toy/quickstart.sh   # erase "red" (neutral "colorful")
set -euo pipefail
cd "$(dirname "$0")/../.."

KIND=${KIND:-shape}
TARGET=${TARGET:-circle}
OUTPUT=${OUTPUT:-output/toy}
export TARGETS=$TARGET THREADS=${THREADS:-2}

index=$(python - "$KIND" "$TARGET" <<'PY'
import sys
from cpe.training.prompts import load_concepts
concepts = [c.target for c in load_concepts(f"configs/toy/concepts_{sys.argv[1]}.yaml", "", 0.0)]
if sys.argv[2] not in concepts:
    sys.exit(f"error: {sys.argv[2]!r} is not in configs/toy/concepts_{sys.argv[1]}.yaml: {concepts}")
print(concepts.index(sys.argv[2]))
PY
)
KIND=$KIND ST_IDX=$index OUTPUT=$OUTPUT bash shell_scripts/toy/train.sh
eraser=$OUTPUT/toy_${KIND}_guide0.3_pal100000.0_gate_rank16/$TARGET
for subset in erased remaining generic; do
    ERASERS= GEN_CONFIG=configs/toy/gen/$subset.yaml bash shell_scripts/toy/generate.sh
done
for subset in erased remaining; do
    ERASERS=$eraser GEN_CONFIG=configs/toy/gen/$subset.yaml bash shell_scripts/toy/generate.sh
done
bash shell_scripts/toy/evaluate.sh
