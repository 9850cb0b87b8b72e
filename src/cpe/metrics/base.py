"""A metric is one object: what it computes, the versions its results depend on, how its table cells look.

A domain column (``cpe.metrics.domains.Column``) names its metric; ``cpe.metrics.registry.METRICS`` maps names to
these objects. Adding a metric = a ``Metric`` subclass in its module + one line in the registry. The evaluation
caches each result on disk under a fingerprint of the metric's ``version``, its scorer settings and its inputs,
so a scorer whose code changes its numbers only needs its ``version`` bumped to be recomputed everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpe.metrics.domains import Column
    from cpe.metrics.evaluate import Evaluation
    from cpe.metrics.image_sets import ImageSet

MISSING = "—"


@dataclass(frozen=True)
class Metric:
    name: str  # the name domain columns use
    version: str  # the scorer code's own version: bump it when a change alters results (stale caches recompute)
    scorer: str  # its entry in results["scorers"] (FID and KID share "fid_kid")
    header: str = "{}"  # table header, from the column name
    note: str = ""  # a sentence under the table of a domain that has this metric
    cached: bool = True  # results cached on disk (else computed on every run)
    derived: bool = False  # computed from other columns' results, not from images
    needs_features: bool = False  # needs the evaluation's image feature extractor

    def settings(self, evaluation: Evaluation) -> dict | None:
        """The scorer's settings and library versions (``results["scorers"]``; part of the cache key)."""
        return None

    def prepare(self, evaluation: Evaluation, column: Column) -> None:
        """Checks that must pass before anything is scored (e.g. that a reference folder exists)."""

    def inputs(self, evaluation: Evaluation, column: Column, images: ImageSet) -> list:
        """What the result depends on besides settings and version (part of the cache key)."""
        return [images.fingerprint()]

    def compute(self, evaluation: Evaluation, column: Column, images: ImageSet | None, out: Path,
                done: dict[str, dict]) -> dict:
        """The column's entry: ``{"value": ..., ...}`` (``out``: the experiment's folder for side files; ``done``:
        the entries of the columns computed so far, for derived metrics)."""
        raise NotImplementedError

    def headers(self, column: Column, results: dict) -> list[str]:
        return [self.header.format(column.name)]

    def cells(self, entry: dict, results: dict) -> list[str]:
        return [MISSING if entry.get("value") is None else self.cell(entry)]

    def cell(self, entry: dict) -> str:
        return f"{entry['value']:.2f}"
