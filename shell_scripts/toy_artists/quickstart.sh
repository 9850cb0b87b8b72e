#!/usr/bin/env bash
# The toy artist domain end to end on the gallery model (cpe.toy.gallery): train the domain's erasers, generate
# every subset with the original model and with the merged erasers, and write results/toy_artists/results.{md,json}.
#   bash shell_scripts/toy_artists/quickstart.sh
#   MODEL=output/gallery/pipeline THREADS=2 bash shell_scripts/toy_artists/quickstart.sh   # another gallery build
#   CONFIG=configs/toy_artists/train_context.yaml bash shell_scripts/toy_artists/quickstart.sh   # the pinpoint options
# Other set sizes (erase 1, 10, ... concepts) and the merged domains: benchmarks/toy_scale.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
unset ST_IDX END_IDX  # the train script reads them as concept indices, the generate script as prompt rows

bash shell_scripts/toy_artists/train_toy_artist_cpe_single.sh
for subset in erased remained neutral actor coco composed_erased composed_neutral composed_remained context_erased; do
    ERASERS= GEN_CONFIG=configs/toy_artists/gen/$subset.yaml bash shell_scripts/toy_artists/generate_by_toy_artist_model.sh
done
for subset in erased remained actor coco composed_erased composed_remained context_erased; do
    GEN_CONFIG=configs/toy_artists/gen/$subset.yaml bash shell_scripts/toy_artists/generate_by_toy_artist_model.sh
done
bash shell_scripts/toy_artists/evaluate_toy_artists.sh
