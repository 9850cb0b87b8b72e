"""Session fixtures of the metric tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from metric_fixtures import tiny_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "clip")
