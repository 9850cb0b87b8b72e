"""One evaluation per domain: every paper column for one or more experiments -> results.json + results.md.

    python -m cpe.metrics.evaluate --domain celebs --root generated_images/celebs \\
        --experiment guide0.3_pal100000.0_gate_rank16_noise0.001 --out results/celebs --inception PATH

Reads ``<root>/<experiment>/<subset>/manifest.jsonl``; FID/KID compare with ``<root>/<reference>/<subset>``
(the original model's images for the same prompts and seeds) unless ``--fid-reference`` names a folder of
real images for COCO. Each metric result is cached beside the results with a fingerprint of its images, its
scorer settings and the metric's own version, so a rerun (e.g. after adding GCD predictions) only computes what
changed. The metrics themselves are objects in ``cpe.metrics.registry.METRICS``. The gallery model's domains
(``--domain toy_celebs|toy_artists|toy_explicit``) are scored by its rule readers and a pooled-pixel FD
(``cpe.metrics.gallery``); they need no downloaded weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from cpe.metrics.base import Metric
from cpe.metrics.clip_score import DEFAULT_CLIP_MODEL, ClipScorer
from cpe.metrics.domains import DOMAINS, Column, Domain
from cpe.metrics.features import CleanFidInception, FeatureExtractor
from cpe.metrics.fid_kid import KID_SUBSETS, image_features
from cpe.metrics.gallery import GalleryPixels
from cpe.metrics.image_sets import ImageSet, load_image_set, load_images
from cpe.metrics.registry import METRICS
from cpe.metrics.tables import render_markdown
from cpe.util.io import atomic_write, atomic_write_text, error_line, json_digest


class Evaluation:
    """Scorers built once, image sets and reference features loaded once, metric results cached on disk.

    ``metrics`` maps the metric names of the domain's columns to ``cpe.metrics.base.Metric`` objects.
    """

    def __init__(
        self,
        domain: Domain,
        root: Path,
        out: Path,
        reference: str = "original",
        fid_reference: Path | None = None,
        clip_model: str = DEFAULT_CLIP_MODEL,
        extractor: FeatureExtractor | None = None,
        gcd_predictions: Path | None = None,
        device: str | None = None,
        batch_size: int = 32,
        kid_subsets: int = KID_SUBSETS,
        seed: int = 0,
        allow_mismatch: bool = False,
        metrics: Mapping[str, Metric] = METRICS,
    ):
        self.domain, self.root, self.out, self.reference = domain, root, out, reference
        self.fid_reference, self.clip_model, self.extractor = fid_reference, clip_model, extractor
        self.gcd_predictions = gcd_predictions or out
        self.device, self.batch_size, self.kid_subsets, self.seed = device, batch_size, kid_subsets, seed
        self.allow_mismatch = allow_mismatch
        self.metrics = metrics
        self._clip: ClipScorer | None = None
        self._nudenet = None
        self._features: dict[str, torch.Tensor] = {}
        self.references: dict[str, ImageSet] = {}
        unknown = sorted({c.metric for c in domain.columns} - set(metrics))
        if unknown:
            raise ValueError(f"domain {domain.name}: unknown metric {unknown[0]!r} (known: {', '.join(metrics)})")
        used = {c.metric for c in domain.columns}
        self.scorers = {}
        for metric in metrics.values():  # registry order, so results list the scorers in a fixed order
            if metric.name in used and metric.scorer not in self.scorers:
                settings = metric.settings(self)
                if settings is not None:
                    self.scorers[metric.scorer] = settings

    # -- shared resources, built once ------------------------------------------------------------------------
    def clip(self) -> ClipScorer:
        if self._clip is None:
            self._clip = ClipScorer(self.clip_model, self.device, self.batch_size)
        return self._clip

    def nudenet(self):
        if self._nudenet is None:
            from cpe.metrics.nudenet_eval import NudeNetScorer

            self._nudenet = NudeNetScorer()
        return self._nudenet

    def features(self, images: ImageSet) -> torch.Tensor:
        """Features of an image set, cached in memory and in ``<out>/features``."""
        key = json_digest([images.fingerprint(), self.extractor.name], 20)
        if key not in self._features:
            path = self.out / "features" / f"{key}.pt"
            if path.is_file():
                self._features[key] = torch.load(path, weights_only=True)
            else:
                feats = image_features(self.extractor, images.paths, self.batch_size, desc=f"features {images.root}")
                atomic_write(path, lambda tmp: torch.save(feats, tmp))
                self._features[key] = feats
        return self._features[key]

    def reference_set(self, column: Column) -> ImageSet:
        """The set FID/KID compare against, loaded once per folder (its report goes into the results)."""
        if column.metric == "fid" and self.fid_reference is not None:
            folder = self.fid_reference
        else:
            folder = self.root / self.reference / column.subset
            if not folder.is_dir():
                raise FileNotFoundError(f"{column.name}: reference folder {folder} does not exist (generate it first)")
        if str(folder) not in self.references:
            self.references[str(folder)] = load_images(folder, self.allow_mismatch)
        return self.references[str(folder)]

    # -- scoring --------------------------------------------------------------------------------------------
    def cached(self, path: Path, key: str, compute) -> dict:
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("fingerprint") == key:
                return stored["result"]
        result = compute()
        atomic_write_text(path, json.dumps({"fingerprint": key, "result": result}, indent=1))
        return result

    def evaluate(self, experiment: str) -> dict:
        sets: dict[str, ImageSet] = {}
        results: dict[str, dict] = {}
        exp_out = self.out / experiment
        for subset in self.domain.subsets:
            folder = self.root / experiment / subset
            if folder.is_dir():
                sets[subset] = load_image_set(folder, self.allow_mismatch)
        for column in self.domain.columns:
            if column.subset in sets:
                self.metrics[column.metric].prepare(self, column)
        for derived in (False, True):
            for column in self.domain.columns:
                metric = self.metrics[column.metric]
                if metric.derived != derived:
                    continue
                if not derived and column.subset not in sets:
                    missing = self.root / experiment / column.subset
                    results[column.name] = {"value": None, "note": f"no generation folder {missing}"}
                    continue
                results[column.name] = self._score(metric, column, sets.get(column.subset), exp_out, results)
        return {"metrics": results, "image_sets": {s: images.report() for s, images in sets.items()}}

    def _score(self, metric: Metric, column: Column, images: ImageSet | None, exp_out: Path, done: dict) -> dict:
        """One column; a cached metric is computed only when its version, scorer settings or inputs changed."""
        def compute() -> dict:
            return metric.compute(self, column, images, exp_out, done)

        if not metric.cached:
            return compute()
        key = json_digest([metric.name, metric.version, self.scorers.get(metric.scorer),
                           metric.inputs(self, column, images)], 20)
        return self.cached(exp_out / "metrics" / f"{column.name}.json", key, compute)

    def run(self, experiments: Sequence[str]) -> dict:
        results = {
            "domain": self.domain.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "root": str(self.root),
            "reference": str(self.root / self.reference)
            + (f" (COCO FID: {self.fid_reference})" if self.fid_reference else ""),
            "scorers": self.scorers,
            "columns": [c.__dict__ for c in self.domain.columns],
            "experiments": {e: self.evaluate(e) for e in experiments},
        }
        results["reference_sets"] = {folder: images.report() for folder, images in self.references.items()}
        atomic_write_text(self.out / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
        atomic_write_text(self.out / "results.md", render_markdown(results, self.metrics))
        return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate CPE generations with the paper's metrics.")
    parser.add_argument("--domain", required=True, choices=sorted(DOMAINS))
    parser.add_argument("--root", required=True, type=Path, help="generation root, e.g. generated_images/celebs")
    parser.add_argument("--experiment", required=True, action="append", help="experiment folder (repeatable)")
    parser.add_argument("--out", required=True, type=Path, help="folder for results.json, results.md, caches")
    parser.add_argument("--reference", default="original", help="experiment folder the FID/KID compare against")
    parser.add_argument("--fid-reference", type=Path, help="folder of real images for COCO FID instead")
    parser.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL, help="CLIP hub id or local folder")
    parser.add_argument("--inception", help="clean-fid's inception-2015-12-05.pt (file or folder)")
    parser.add_argument("--gcd-predictions", type=Path, help="folder with <experiment>/gcd_predictions_<subset>.csv")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--kid-subsets", type=int, default=KID_SUBSETS)
    parser.add_argument("--seed", type=int, default=0, help="seed of the KID subsets")
    parser.add_argument(
        "--allow-mismatch", action="store_true", help="score present images when manifest and disk disagree"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    domain = DOMAINS[args.domain]
    needs_features = any(METRICS[c.metric].needs_features for c in domain.columns)
    extractor = None
    if needs_features:
        extractor = GalleryPixels() if domain.features == "gallery" else CleanFidInception(args.inception, args.device)
    evaluation = Evaluation(
        domain,
        args.root,
        args.out,
        reference=args.reference,
        fid_reference=args.fid_reference,
        clip_model=args.clip_model,
        extractor=extractor,
        gcd_predictions=args.gcd_predictions,
        device=args.device,
        batch_size=args.batch_size,
        kid_subsets=args.kid_subsets,
        seed=args.seed,
        allow_mismatch=args.allow_mismatch,
    )
    results = evaluation.run(args.experiment)
    print((args.out / "results.md").read_text(encoding="utf-8"))
    return results


def cli(argv: Sequence[str] | None = None) -> int:
    """``main`` with bad input reported as one line on stderr and exit status 2."""
    try:
        main(argv)
    except (OSError, ValueError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
