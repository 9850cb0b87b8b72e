#!/usr/bin/env bash
# The toy celebrity domain end to end on the gallery model (cpe.toy.gallery): train the domain's erasers, generate
# every subset with the original model and with the merged erasers, and write results/toy_celebs/results.{md,json}.
#   bash shell_scripts/toy_celebs/quickstart.sh
#   MODEL=output/gallery/pipeline THREADS=2 bash shell_scripts/toy_celebs/quickstart.sh   # another gallery build
#   CONFIG=configs/toy_celebs/train_context.yaml bash shell_scripts/toy_celebs/quickstart.sh   # the pinpoint options
# Other set sizes (erase 1, 10, ... concepts) and the merged domains: benchmarks/toy_scale.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
unset ST_IDX END_IDX  # the train script reads them as concept indices, the generate script as prompt rows

bash shell_scripts/toy_celebs/train_toy_celeb_cpe_single.sh
for subset in erased remained generic artist coco styled_erased styled_generic styled_remained context_erased context_remained marked_remained; do
    ERASERS= GEN_CONFIG=configs/toy_celebs/gen/$subset.yaml bash shell_scripts/toy_celebs/generate_by_toy_celeb_model.sh
done
for subset in erased remained artist coco styled_erased styled_remained context_erased context_remained marked_remained; do
    GEN_CONFIG=configs/toy_celebs/gen/$subset.yaml bash shell_scripts/toy_celebs/generate_by_toy_celeb_model.sh
done
bash shell_scripts/toy_celebs/evaluate_toy_celebs.sh
