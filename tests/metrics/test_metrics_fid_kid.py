"""FID/KID against hand computations from known Gaussian features; zero for identical sets; extractors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from metric_fixtures import TinyFeatureNet, make_generation, write_fake_inception
from PIL import Image

from cpe.metrics import features as features_module
from cpe.metrics.features import INCEPTION_URL, CleanFidInception, ModuleFeatures, find_inception
from cpe.metrics.fid_kid import fid_from_features, image_features, kid_from_features
from cpe.metrics.image_sets import load_image_set


def gaussian_features(seed: int, n: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, std, (n, len(mean)))


def hand_fid(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def hand_kid_full_subset(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (clean-fid's formula) on the whole sets."""
    d, m = x.shape[1], len(x)
    a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
    b = (x @ y.T / d + 1) ** 3
    return float(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)


def test_fid_matches_hand_computation_and_the_gaussians_closed_form():
    mean1, std1 = np.zeros(6), np.ones(6)
    mean2, std2 = np.array([1.0, 0, 0, 0, 0, 0.5]), np.array([2.0, 1, 1, 1, 0.5, 1])
    x, y = gaussian_features(0, 4000, mean1, std1), gaussian_features(1, 4000, mean2, std2)
    fid = fid_from_features(torch.from_numpy(x), torch.from_numpy(y))
    assert fid == pytest.approx(hand_fid(x, y), rel=1e-6)
    closed_form = ((mean1 - mean2) ** 2).sum() + ((std1 - std2) ** 2).sum()  # 1.25 + 1.25 = 2.5
    assert fid == pytest.approx(closed_form, abs=0.15)


def test_fid_is_zero_for_identical_sets():
    x = torch.from_numpy(gaussian_features(2, 300, np.arange(5.0), np.full(5, 3.0)))
    assert abs(fid_from_features(x, x.clone())) < 1e-8


def test_kid_on_whole_sets_matches_hand_computation():
    x = gaussian_features(3, 60, np.zeros(4), np.ones(4))
    y = gaussian_features(4, 60, np.full(4, 0.7), np.ones(4))
    kid = kid_from_features(torch.from_numpy(x), torch.from_numpy(y), subsets=3, max_subset_size=1000)
    assert kid["subset_size"] == 60  # min(len(real), len(fake), max_subset_size), as clean-fid
    assert kid["mean"] == pytest.approx(hand_kid_full_subset(y, x), rel=1e-9)
    assert kid["std"] == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set


def test_kid_of_identical_sets_is_zero_up_to_the_unbiased_estimators_1_over_m_term():
    """For identical sets the unbiased estimator equals -2(m·tr K - 1ᵀK1)/(m²(m-1)): not exactly 0 but O(1/m)."""
    x = gaussian_features(5, 400, np.zeros(4), np.ones(4))
    same = kid_from_features(torch.from_numpy(x), torch.from_numpy(x.copy()), subsets=2)
    kernel = (x @ x.T / 4 + 1) ** 3
    m = len(x)
    assert same["mean"] == pytest.approx(-2 * (m * np.trace(kernel) - kernel.sum()) / (m**2 * (m - 1)), rel=1e-9)
    assert -2 * np.diag(kernel).mean() / (m - 1) < same["mean"] < 0
    shifted = kid_from_features(torch.from_numpy(x), torch.from_numpy(x + 0.5), subsets=2)
    assert abs(same["mean"]) < 0.05 * shifted["mean"]


def test_kid_subsets_are_seeded():
    x = torch.from_numpy(gaussian_features(6, 80, np.zeros(3), np.ones(3)))
    y = torch.from_numpy(gaussian_features(7, 90, np.ones(3), np.ones(3)))
    first = kid_from_features(x, y, subsets=5, max_subset_size=30, seed=1)
    assert kid_from_features(x, y, subsets=5, max_subset_size=30, seed=1) == first
    assert kid_from_features(x, y, subsets=5, max_subset_size=30, seed=2)["mean"] != first["mean"]
    assert first["std"] > 0


def test_too_few_images_is_an_error():
    with pytest.raises(ValueError, match="at least 2 images"):
        fid_from_features(torch.ones(1, 3), torch.ones(5, 3))


def test_project_network_features_of_image_files(tmp_path):
    images = load_image_set(make_generation(tmp_path / "set", ["a", "b", "c"], size=20))
    extractor = ModuleFeatures(TinyFeatureNet(), image_size=16, name="tiny", device="cpu")
    feats = image_features(extractor, images.paths, batch_size=2)
    assert feats.shape == (3, 8) and feats.dtype == torch.float32
    with Image.open(images.paths[1]) as image:
        one = extractor(extractor.preprocess(image)[None])
    torch.testing.assert_close(feats[1:2], one)
    assert abs(fid_from_features(feats, feats)) < 1e-8


def test_clean_fid_inception_adapter_resizes_and_normalizes_like_clean_fid(tmp_path):
    path = write_fake_inception(tmp_path / "weights")
    extractor = CleanFidInception(tmp_path / "weights", device="cpu")
    assert extractor.path == path
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    x = extractor.preprocess(image)
    assert x.shape == (3, 299, 299) and x.dtype == torch.float32
    red = Image.fromarray(np.asarray(image)[:, :, 0].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC)
    torch.testing.assert_close(x[0], torch.from_numpy(np.array(red)))  # float resize, no uint8 quantisation
    expected = torch.jit.load(str(path)).layers((x[None] - 128) / 128).reshape(1, -1)
    torch.testing.assert_close(extractor(x[None]), expected)


def test_missing_inception_weights_name_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(features_module, "CLEANFID_CACHE", tmp_path / "empty")
    monkeypatch.delenv(features_module.INCEPTION_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="Inception weights not found") as error:
        find_inception()
    assert INCEPTION_URL in str(error.value)
    write_fake_inception(tmp_path / "env")
    monkeypatch.setenv(features_module.INCEPTION_ENV, str(tmp_path / "env"))
    assert find_inception() == tmp_path / "env" / features_module.INCEPTION_FILE
