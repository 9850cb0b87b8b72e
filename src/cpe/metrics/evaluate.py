"""One evaluation per domain: every paper column for one or more experiments -> results.json + results.md.

    python -m cpe.metrics.evaluate --domain celebs --root generated_images/celebs \\
        --experiment guide0.3_pal100000.0_gate_rank16_noise0.001 --out results/celebs --inception PATH

Reads ``<root>/<experiment>/<subset>/manifest.jsonl``; FID/KID compare with ``<root>/<reference>/<subset>``
(the original model's images for the same prompts and seeds) unless ``--fid-reference`` names a folder of
real images for COCO. Each metric result is cached beside the results with a fingerprint of its images and
scorer settings, so a rerun (e.g. after adding GCD predictions) only computes what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch

from cpe.io_utils import atomic_write, atomic_write_text, error_line
from cpe.metrics.clip_score import DEFAULT_CLIP_MODEL, ClipScorer, clip_score, clip_versions
from cpe.metrics.domains import DOMAINS, Column, Domain, harmonic_h
from cpe.metrics.features import CleanFidInception, FeatureExtractor
from cpe.metrics.fid_kid import KID_MAX_SUBSET_SIZE, KID_SUBSETS, fid_from_features, image_features, kid_from_features
from cpe.metrics.gcd import gcd_accuracy, write_gcd_inputs
from cpe.metrics.image_sets import ImageSet, load_image_set, load_images
from cpe.metrics.tables import render_markdown

GCD_HELP = "run shell_scripts/evaluation/gcd_predict.py {inputs} {predictions} in the GCD environment (README)"


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def image_fingerprint(images: ImageSet) -> str:
    """Changes when any scored file, its size or its modification time (or its prompt) changes."""
    stats = [(f, p.stat().st_size, p.stat().st_mtime_ns) for f, p in zip(images.files, images.paths, strict=True)]
    prompts = images.prompts if images.records is not None else None
    return fingerprint(str(images.root.resolve()), stats, prompts)


class Evaluation:
    """Scorers built once, image sets and reference features loaded once, metric results cached on disk."""

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
    ):
        self.domain, self.root, self.out, self.reference = domain, root, out, reference
        self.fid_reference, self.clip_model, self.extractor = fid_reference, clip_model, extractor
        self.gcd_predictions = gcd_predictions or out
        self.device, self.batch_size, self.kid_subsets, self.seed = device, batch_size, kid_subsets, seed
        self.allow_mismatch = allow_mismatch
        self._clip: ClipScorer | None = None
        self._nudenet = None
        self._features: dict[str, torch.Tensor] = {}
        self.references: dict[str, ImageSet] = {}
        metrics = {c.metric for c in domain.columns}
        if metrics & {"fid", "kid"} and extractor is None:
            raise ValueError("FID/KID need a feature extractor (--inception PATH for clean-fid's Inception)")
        self.scorers = self._scorer_versions(metrics)

    def _scorer_versions(self, metrics: set[str]) -> dict:
        scorers = {}
        if "clip" in metrics:
            scorers["clip"] = clip_versions(self.clip_model)
        if metrics & {"fid", "kid"}:
            scorers["fid_kid"] = {
                "features": self.extractor.name,
                "torchmetrics": version("torchmetrics"),
                "torch": torch.__version__,
                "kid_subsets": self.kid_subsets,
                "kid_max_subset_size": KID_MAX_SUBSET_SIZE,
                "kid_seed": self.seed,
            }
        if "nudenet" in metrics:
            from cpe.metrics.nudenet_eval import NudeNetScorer

            self._nudenet = NudeNetScorer()
            scorers["nudenet"] = self._nudenet.versions()
        if "gcd" in metrics:
            scorers["gcd"] = {
                "detector": "GIPHY celeb-detection-oss (external)",
                "rule": "top-1 among images with a face",
            }
        return scorers

    def clip(self) -> ClipScorer:
        if self._clip is None:
            self._clip = ClipScorer(self.clip_model, self.device, self.batch_size)
        return self._clip

    def features(self, images: ImageSet) -> torch.Tensor:
        """Features of an image set, cached in memory and in ``<out>/features``."""
        key = fingerprint(image_fingerprint(images), self.extractor.name)
        if key not in self._features:
            path = self.out / "features" / f"{key}.pt"
            if path.is_file():
                self._features[key] = torch.load(path, weights_only=True)
            else:
                feats = image_features(self.extractor, images.paths, self.batch_size, desc=f"features {images.root}")
                atomic_write(path, lambda tmp: torch.save(feats, tmp))
                self._features[key] = feats
        return self._features[key]

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
        metrics: dict[str, dict] = {}
        exp_out = self.out / experiment
        for subset in self.domain.subsets:
            folder = self.root / experiment / subset
            if folder.is_dir():
                sets[subset] = load_image_set(folder, self.allow_mismatch)
        for column in self.domain.columns:
            if column.metric in ("fid", "kid") and column.subset in sets:
                self._reference_set(column)  # a missing reference fails before any scoring
        for column in self.domain.columns:
            if column.metric == "h":
                continue
            if column.subset not in sets:
                missing = self.root / experiment / column.subset
                metrics[column.name] = {"value": None, "note": f"no generation folder {missing}"}
                continue
            metrics[column.name] = self._metric(column, sets[column.subset], exp_out)
        for column in self.domain.columns:
            if column.metric == "h":
                metrics[column.name] = self._h(metrics)
        return {"metrics": metrics, "image_sets": {s: images.report() for s, images in sets.items()}}

    def _h(self, metrics: dict) -> dict:
        acc_e, acc_r = metrics["Acc_e"].get("value"), metrics["Acc_r"].get("value")
        if acc_e is None or acc_r is None:
            return {"value": None, "note": "needs Acc_e and Acc_r"}
        return {"value": harmonic_h(acc_e, acc_r)}

    def _metric(self, column: Column, images: ImageSet, exp_out: Path) -> dict:
        cache = exp_out / "metrics" / f"{column.name}.json"
        if column.metric == "gcd":
            inputs = write_gcd_inputs(images, exp_out / f"gcd_inputs_{column.subset}.csv")
            predictions = self.gcd_predictions / exp_out.name / f"gcd_predictions_{column.subset}.csv"
            if not predictions.is_file():
                note = "GCD predictions missing: " + GCD_HELP.format(inputs=inputs, predictions=predictions)
                return {"value": None, "note": note}
            result = gcd_accuracy(inputs, predictions)
            return {"value": result.pop("acc"), **result}
        if column.metric == "clip":
            key = fingerprint(image_fingerprint(images), self.scorers["clip"])

            def compute() -> dict:
                summary, values = clip_score(self.clip(), images)
                rows = "".join(f"{f},{v:.6f}\n" for f, v in zip(images.files, values, strict=True))
                atomic_write_text(exp_out / f"clip_{column.subset}.csv", "file,clip_score\n" + rows)
                return {"value": summary["mean"], "std": summary["std"], "n": summary["n"]}

            return self.cached(cache, key, compute)
        if column.metric in ("fid", "kid"):
            return self._distance(column, images, cache)
        if column.metric == "nudenet":
            from cpe.metrics.nudenet_eval import nudenet_counts

            key = fingerprint(image_fingerprint(images), self.scorers["nudenet"])

            def compute() -> dict:
                result = nudenet_counts(self._nudenet, images, exp_out / f"nudenet_hits_{column.subset}.csv")
                return {"value": result["total"], **result}

            return self.cached(cache, key, compute)
        raise ValueError(f"unknown metric {column.metric!r} in column {column.name}")

    def _reference_set(self, column: Column) -> ImageSet:
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

    def _distance(self, column: Column, images: ImageSet, cache: Path) -> dict:
        reference = self._reference_set(column)
        key = fingerprint(image_fingerprint(images), image_fingerprint(reference), self.scorers["fid_kid"])

        def compute() -> dict:
            real, fake = self.features(reference), self.features(images)
            sizes = {"n": len(images), "n_reference": len(reference), "reference": str(reference.root)}
            if column.metric == "fid":
                return {"value": fid_from_features(real, fake), **sizes}
            kid = kid_from_features(real, fake, self.kid_subsets, KID_MAX_SUBSET_SIZE, self.seed)
            return {"value": kid.pop("mean"), **kid, **sizes}

        return self.cached(cache, key, compute)

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
        atomic_write_text(self.out / "results.md", render_markdown(results))
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
    needs_features = any(c.metric in ("fid", "kid") for c in domain.columns)
    extractor = CleanFidInception(args.inception, args.device) if needs_features else None
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
