# Shared defaults of shell_scripts/toy_<domain>/*.sh (the gallery model's domains, cpe.toy.gallery): sourced from
# the repository root before the SD domains' common body. MODEL defaults to the shipped gallery model; a folder
# without model_index.json stops with the command that builds it. CPU defaults: DEVICE=cpu, THREADS=2.
MODEL=${MODEL:-$(python -c "from cpe.toy.gallery import GALLERY_MODEL_DIR; print(GALLERY_MODEL_DIR)")}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-2}
if [ ! -f "$MODEL/model_index.json" ]; then
    echo "error: no gallery model at $MODEL (build one: python -m cpe.toy.gallery.build --out DIR, then MODEL=DIR/pipeline)" >&2
    exit 2
fi
