"""Model loading: the diffusers pipeline import is quiet about image processors the project never uses."""

from __future__ import annotations

import logging
import subprocess
import sys

from cpe.models.loading import _UnusedImageProcessorNotice


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("transformers.utils.import_utils", logging.WARNING, __file__, 1, message, None, None)


def test_only_the_unused_image_processor_notice_is_dropped():
    notice = _UnusedImageProcessorNotice()
    clip = ("`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` for "
            "backward compatibility. Install torchvision to use the default backend, or import ...")
    assert not notice.filter(record(clip))
    assert not notice.filter(record(clip.replace("CLIP", "Siglip")))
    assert notice.filter(record("Could not import module 'CLIPTextModel'. Are this object's requirements defined"))
    assert notice.filter(record("`CLIPTextModel` requires torchvision (not installed)"))


def test_importing_the_pipeline_prints_no_warning():
    code = "from cpe.models.loading import stable_diffusion_pipeline_class; stable_diffusion_pipeline_class()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
