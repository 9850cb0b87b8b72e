import pytest
import torch

from cpe.toy import TOY_MODEL_DIR
from cpe.toy.world import COLOURS, SHAPES

pytestmark = pytest.mark.skipif(not (TOY_MODEL_DIR / "model_index.json").is_file(), reason="toy model not built")


@pytest.fixture(scope="module")
def pipe():
    from cpe.models.loading import load_pipeline

    return load_pipeline(str(TOY_MODEL_DIR))


def test_committed_model_loads_as_a_float32_pipeline_with_the_clip_tokenizer(pipe):
    assert all(p.dtype == torch.float32 for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
    assert pipe.tokenizer("a colorful circle").input_ids == [49406, 320, 11444, 7117, 49407]
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == 64


def test_committed_model_draws_the_prompted_colour(pipe):
    from cpe.toy.classify import classify_colour, match_rate
    from cpe.toy.quality import sample_images

    colours = [list(COLOURS)[i % len(COLOURS)] for i in range(16)]
    prompts = [f"a {c} {SHAPES[i % len(SHAPES)]}" for i, c in enumerate(colours)]
    images = sample_images(pipe, prompts, list(range(16)), steps=10)
    assert match_rate(classify_colour(images), colours) >= 0.95
