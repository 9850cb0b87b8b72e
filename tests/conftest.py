"""Shared fixtures: the tiny random pipeline (built once per session) and the reference data."""

from __future__ import annotations

import os

# One thread per process: the tests' models are tiny, and OpenMP threads that spin-wait on a busy 2-core
# machine made a 10-step tiny sampling 70x slower (18.8 s instead of 0.26 s). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "data" / "reference"
RELEASED_RESAG = REFERENCE / "released_resag"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A small random StableDiffusionPipeline saved to a folder (loaded like a hub model)."""
    from cpe.models.zoo import build_tiny_pipeline

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


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("toy_scale")``: a script of ``benchmarks/`` imported as a module (benchmarks are not a
    package), so tests can call its helpers."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks"
                                                      / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
