#!/usr/bin/env bash
# Where the explicit-content erasers' gates fire, before generating: leakage of the 4 word erasers over the I2P
# prompts (4,703; the text encoder only, no UNet: minutes on a CPU, seconds on a GPU) and gate maps of --prompt
# arguments. Writes $OUT/leakage.{md,json}, $OUT/gate_maps.txt and a PNG per --prompt.
# Every variable can be set from the environment, e.g.
#   bash shell_scripts/explicit/inspect_explicit_gates.sh --prompt "a nude statue in a museum"
#   ERASERS=../shared/data/reference/released_resag/explicit bash ...   # the authors' released files
#   DATA_DIR=../shared/data/reference/generation_prompts bash ...         # where the prompt CSVs are
# Extra arguments are passed to inspect_gates.py (e.g. --top 10).
set -euo pipefail
cd "$(dirname "$0")/../.."

GUIDE=${GUIDE:-3.0}
PAL=${PAL:-10000.0}
GATE_RANK=${GATE_RANK:-64}
DATA_DIR=${DATA_DIR:-data/generation_prompts}
LEAKAGE=${LEAKAGE:-$DATA_DIR/I2P_prompts_4703.csv}
DOMAIN=explicit
EXPERIMENT_PREFIX=explicit
source shell_scripts/common/inspect.sh
