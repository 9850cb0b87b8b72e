"""Shared fixtures: the tiny random pipeline (built once per session) and the reference data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "data" / "reference"
RELEASED_RESAG = REFERENCE / "released_resag"


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A small random StableDiffusionPipeline saved to a folder (loaded like a hub model)."""
    from cpe.model_zoo import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_pipeline") / "model")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE} (../shared beside the repository)")
    return REFERENCE


@pytest.fixture(scope="session")
def released_resag_dir(reference_dir) -> Path:
    if not RELEASED_RESAG.is_dir():
        pytest.skip(f"released gate files not found at {RELEASED_RESAG}")
    return RELEASED_RESAG
