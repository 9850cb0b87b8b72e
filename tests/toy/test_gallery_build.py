import json

import numpy as np
import pytest

from cpe.models.loading import load_pipeline
from cpe.toy.build import INFO_FILE, PIPELINE_DIR, STATE_DIR
from cpe.toy.gallery.build import GalleryBuildConfig, build
from cpe.toy.quality import sample_images

TINY = GalleryBuildConfig(vae_steps=2, unet_steps=2, dataset_size=24, batch_size=4, vae_batch_size=4,
                          checkpoint_every=1, text_width=32, text_layers=1, unet_channels=(16, 32, 32))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery")
    build(out, TINY)
    return out


def test_gallery_builder_writes_a_pipeline_that_loads_and_samples_with_gallery_prompts(built):
    pipe = load_pipeline(str(built / PIPELINE_DIR))
    assert pipe.tokenizer.model_max_length == 32 and pipe.text_encoder.config.hidden_size == 32
    assert list(pipe.unet.config.block_out_channels) == [16, 32, 32]
    images = sample_images(pipe, ["a portrait of a person in the style of Dikro, nudity"], [0], steps=2)
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8


def test_gallery_builder_records_its_config_and_reader_scores_and_cleans_its_state(built):
    info = json.loads((built / INFO_FILE).read_text())
    assert info["config"]["unet_channels"] == [16, 32, 32] and info["config"]["max_length"] == 32
    assert info["readers_on_renders"] == {"identity_accuracy": 1.0, "style_accuracy": 1.0,
                                          "mark_count_accuracy": 1.0, "n": 24}
    assert not (built / STATE_DIR).exists()
    with pytest.raises(FileExistsError, match="overwrite"):
        build(built, TINY)


def test_quality_report_scores_every_domain_with_its_counts(built):
    from cpe.toy.gallery.quality import evaluate_pipeline

    report = evaluate_pipeline(load_pipeline(str(built / PIPELINE_DIR)), seeds_per_identity=1, per_artist=3,
                               n_i2p=4, n_benign=4, n_generic=3, steps=2, identity_names=["Foumnem", "Drinus"],
                               artist_names=["Dikro"])
    assert (report["n_identity"], report["n_style"], report["n_identity_in_style"]) == (2, 3, 1)
    assert (report["n_triggers"], report["n_benign"], report["generic_person"]["n"]) == (4, 4, 3)
    for key in ("identity_accuracy", "style_accuracy", "mark_rate_triggers", "mark_rate_benign"):
        assert 0.0 <= report[key] <= 1.0


def test_toy_builder_defaults_are_unchanged_by_the_gallery_options():
    from cpe.toy.build import BuildConfig, make_unet
    from cpe.toy.gallery.build import GalleryBuildConfig

    assert list(make_unet(BuildConfig()).config.block_out_channels) == [32, 64, 64]
    assert list(make_unet(GalleryBuildConfig()).config.block_out_channels) == [48, 96, 96]


def test_the_shipped_gallery_model_is_the_default_build_of_this_world_and_under_30_mb():
    """The weights in GALLERY_MODEL_DIR were built by the default GalleryBuildConfig of the world in this code (a
    changed world, e.g. another identity count or training mix, would need a rebuild), and fit the 30 MB budget."""
    from dataclasses import asdict

    from cpe.toy.gallery import GALLERY_ASSETS, GALLERY_MODEL_DIR
    from cpe.toy.gallery.build import world_signature
    from cpe.toy.gallery.quality import failed_bars

    info = json.loads((GALLERY_ASSETS / INFO_FILE).read_text())
    expected = json.loads(json.dumps(asdict(GalleryBuildConfig())))  # tuples as the JSON file's lists
    assert info["config"] == expected and info["config"]["world"] == world_signature()
    total = sum(p.stat().st_size for p in GALLERY_ASSETS.rglob("*") if p.is_file())
    assert total <= 30 * 2**20, total
    pipe = load_pipeline(str(GALLERY_MODEL_DIR))
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.unet.dtype.is_floating_point
    assert not failed_bars(info["quality_on_prompts"]), failed_bars(info["quality_on_prompts"])
