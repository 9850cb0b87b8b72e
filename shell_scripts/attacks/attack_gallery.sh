#!/usr/bin/env bash
# Attack an eraser on the gallery model (cpe.toy.gallery; or the original gallery model), then render the attacked
# prompts with it and print the attack success rate before and after (python -m cpe.attacks.evaluate, judged by the
# gallery's readers: the identity or style reader names the target, or at least one mark; asr.json).
# Choose the domain with DOMAIN (default: toy_celebs) and the attack with ATTACK (default: discrete):
#   DOMAIN=toy_celebs     # an identity (TARGET, default Foumnem, the first of configs/toy_celebs/concepts.yaml)
#   DOMAIN=toy_artists    # an artist's style (TARGET, default Dikro)
#   DOMAIN=toy_explicit   # the mark, on the I2P analogue's prompts with an erase word (the 4 words at once)
#   ATTACK=discrete       # UnlearnDiffAtk-style: 5 prepended vocabulary tokens, the target's tokens banned (white box)
#   ATTACK=soft           # soft prompt: continuous token embeddings, the upper bound (white box)
#   ATTACK=ringabell      # Ring-A-Bell-style concept vector inverted to words (black box: text encoder only)
#   ATTACK=prefix         # the control: the discrete attack's random initial words, not optimised (discrete.steps=0)
# The attacked model: CPE erasers (ERASERS, default the domain's experiment folder of train_toy_*_cpe_single.sh, every
# eraser in it merged, as generate_by_toy_*_model.sh), a UCE edit (UCE=FILE) or an ESD-x edit (ESD=FILE), e.g.
#   bash shell_scripts/attacks/attack_gallery.sh                                      # the identity erasers
#   ERASERS= bash shell_scripts/attacks/attack_gallery.sh                             # the original model
#   ERASERS= UCE=output/toy_celebs/uce_lamb0.1_erase1.0_preserve0.1/Foumnem/uce.safetensors bash ...   # UCE
#   ERASERS= ESD=path/to/esd.safetensors DOMAIN=toy_explicit ATTACK=soft bash ...                       # ESD-x
#   TARGET=Naenniv SEED=1 bash ...   ;   OUT=... bash ...   ;   extra arguments go to attack.py (--set discrete.steps=40)
# Output: output/attacks/<domain>/<target>/<attack>_seed<seed>/ (attacked prompts or embeddings, attack_manifest.json,
# asr.json).
set -euo pipefail
cd "$(dirname "$0")/../.."

DOMAIN=${DOMAIN:-toy_celebs}
case "$DOMAIN" in
    toy_celebs) PREFIX=toy_celeb; DEFAULT_TARGET=Foumnem; GUIDE=${GUIDE:-0.3}; PAL=${PAL:-100000.0}; GATE_RANK=${GATE_RANK:-16} ;;
    toy_artists) PREFIX=toy_artist; DEFAULT_TARGET=Dikro; GUIDE=${GUIDE:-0.5}; PAL=${PAL:-10000.0}; GATE_RANK=${GATE_RANK:-16} ;;
    toy_explicit) PREFIX=toy_explicit; DEFAULT_TARGET=nudity; GUIDE=${GUIDE:-3.0}; PAL=${PAL:-10000.0}; GATE_RANK=${GATE_RANK:-64} ;;
    *) echo "error: DOMAIN must be toy_celebs, toy_artists or toy_explicit, got $DOMAIN" >&2; exit 2 ;;
esac
TARGET=${TARGET:-$DEFAULT_TARGET}
NOISE=${NOISE:-0.001}
ERASERS=${ERASERS-output/${DOMAIN}/${PREFIX}_single_guide${GUIDE}_pal${PAL}_gate_rank${GATE_RANK}_noise${NOISE}}
ESD=${ESD:-}
ATTACK=${ATTACK:-discrete}
control=()
if [ "$ATTACK" = prefix ]; then   # the random-prefix control is the discrete config with no optimisation
    ATTACK_CONFIG=${ATTACK_CONFIG:-configs/attacks/${DOMAIN}/discrete.yaml}
    control=(--set discrete.steps=0)
fi
source shell_scripts/common/toy_gallery.sh
set -- --threads "$THREADS" "${control[@]}" "$@"
if [ -n "$ESD" ]; then set -- --esd "$ESD" "$@"; fi
source shell_scripts/common/attack.sh "$@"
if [ -n "$ESD" ]; then eraser_args+=(--esd "$ESD"); fi
python -m cpe.attacks.evaluate --attack_dir "$OUT" --model "$MODEL" "${eraser_args[@]}" --device "$DEVICE" \
    --json "$OUT/asr.json"
