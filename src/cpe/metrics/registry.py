"""Every metric the evaluation knows, by the name domain columns use (adding one: its module + one line here)."""

from __future__ import annotations

from cpe.metrics.base import Metric
from cpe.metrics.clip_score import CLIP_SCORE
from cpe.metrics.domains import HARMONIC_H
from cpe.metrics.fid_kid import FID, KID
from cpe.metrics.gallery import GALLERY_METRICS
from cpe.metrics.gcd import GCD_ACCURACY
from cpe.metrics.nudenet_eval import NUDENET

METRICS: dict[str, Metric] = {
    m.name: m for m in (CLIP_SCORE, FID, KID, NUDENET, GCD_ACCURACY, HARMONIC_H, *GALLERY_METRICS)
}
