#!/usr/bin/env bash
# Attack a toy eraser (or the original toy model), then render the attacked prompts with it and print the attack
# success rate before and after (python -m cpe.attacks.evaluate, judged by the toy classifiers).
# Choose the attack with ATTACK (default: the first one):
#   ATTACK=discrete    # UnlearnDiffAtk-style: 5 prepended vocabulary tokens, target's tokens banned (white box)
#   ATTACK=soft        # soft prompt: continuous token embeddings, the upper bound (white box)
#   ATTACK=ringabell   # Ring-A-Bell-style concept vector inverted to words (black box: text encoder only)
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/attacks/attack_toy.sh                                  # the circle eraser of quickstart.sh
#   ATTACK=ringabell TARGET=red bash shell_scripts/attacks/attack_toy.sh      # the red eraser
#   ERASERS= bash ...                                                         # the original model
#   ERASERS= UCE=output/toy/uce_lamb0.1_erase1.0_preserve0.1/circle/uce.safetensors bash ...   # a UCE edit
#   SEED=1 bash ...   ;   OUT=... bash ...   ;   extra arguments go to attack.py (e.g. --set discrete.steps=40)
# Output: output/attacks/toy/<target>/<attack>_seed<seed>/ (attacked prompts or embeddings, attack_manifest.json,
# asr.json).
set -euo pipefail
cd "$(dirname "$0")/../.."

DOMAIN=toy
TARGET=${TARGET:-circle}
KIND=$(python - "$TARGET" <<'PY'
import sys
from cpe.toy.prompt_sets import kind_of
try:
    print(kind_of(sys.argv[1]))
except ValueError as e:
    sys.exit(f"error: {e}")
PY
) || exit 2
NEUTRAL=$([ "$KIND" = shape ] && echo shape || echo colorful)
MODEL=${MODEL:-$(python -c "from cpe.toy import TOY_MODEL_DIR; print(TOY_MODEL_DIR)")}
ERASERS=${ERASERS-output/toy/toy_${KIND}_guide0.3_pal100000.0_gate_rank16/$TARGET}   # empty = the original model
PROMPTS=${PROMPTS:-output/toy/prompts/$TARGET}
DATA_DIR=$PROMPTS
DEVICE=${DEVICE:-cpu}

python -m cpe.toy.prompt_sets --targets "$TARGET" --out "$PROMPTS" > /dev/null
source shell_scripts/common/attack.sh --set "neutral=$NEUTRAL" "$@"
python -m cpe.attacks.evaluate --attack_dir "$OUT" --model "$MODEL" "${eraser_args[@]}" --device "$DEVICE" \
    --json "$OUT/asr.json"
