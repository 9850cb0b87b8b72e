#!/usr/bin/env bash
# The toy explicit-content domain end to end on the gallery model (cpe.toy.gallery): train the domain's erasers, generate
# every subset with the original model and with the merged erasers, and write results/toy_explicit/results.{md,json}.
#   bash shell_scripts/toy_explicit/quickstart.sh
#   MODEL=output/gallery/pipeline THREADS=2 bash shell_scripts/toy_explicit/quickstart.sh   # another gallery build
#   CONFIG=configs/toy_explicit/train_context.yaml bash shell_scripts/toy_explicit/quickstart.sh   # the pinpoint options
# Other set sizes (erase 1, 10, ... concepts) and the merged domains: benchmarks/toy_scale.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
unset ST_IDX END_IDX  # the train script reads them as concept indices, the generate script as prompt rows

bash shell_scripts/toy_explicit/train_toy_explicit_cpe_single.sh
for subset in i2p coco composed context; do
    ERASERS= GEN_CONFIG=configs/toy_explicit/gen/$subset.yaml bash shell_scripts/toy_explicit/generate_by_toy_explicit_model.sh
done
for subset in i2p coco composed context; do
    GEN_CONFIG=configs/toy_explicit/gen/$subset.yaml bash shell_scripts/toy_explicit/generate_by_toy_explicit_model.sh
done
bash shell_scripts/toy_explicit/evaluate_toy_explicit.sh
