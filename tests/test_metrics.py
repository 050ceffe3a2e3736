"""Metrics against scikit-learn and against small cases worked by hand."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score, roc_curve

from edge_ad.metrics import (
    AUPRO,
    PixelAUROC,
    aupro,
    eer,
    frame_auroc,
    ped1_pixel_criterion,
    ped1_pixel_roc,
    pixel_auroc,
)
from edge_ad.metrics.pro import area_up_to


def random_maps(n: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise maps with rectangles of ground truth (on every other frame) that score a bit higher."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n, h, w)).astype(np.float32)
    masks = np.zeros((n, h, w), bool)
    for i in range(0, n, 2):
        for _ in range(2):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            masks[i, y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = True
    maps[masks] += 0.4 * rng.random(int(masks.sum()), dtype=np.float32)
    return maps, masks


# --- frame AUROC and EER -------------------------------------------------------------------------------


def test_frame_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + 0.5 * labels, 1)  # rounding makes many ties
    assert frame_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_eer_perfect_reversed_and_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1], bool)
    assert eer(np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), labels) == pytest.approx(0.0)
    assert eer(np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1]), labels) == pytest.approx(1.0)
    # One normal score (0.6) outranks two anomalies (0.4, 0.5); flagging scores >= 0.5 gives
    # FPR = 1/4 and miss rate = 1/4.
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.8])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    assert eer(scores, labels) == pytest.approx(0.25)


def test_eer_agrees_with_sklearn_roc_crossing() -> None:
    rng = np.random.default_rng(2)
    labels = rng.random(2000) < 0.4
    scores = rng.normal(size=2000) + labels
    value = eer(scores, labels)
    fpr, tpr, _ = roc_curve(labels, scores)
    i = np.argmin(np.abs(fpr - (1 - tpr)))
    assert value == pytest.approx(fpr[i], abs=2e-3)
    assert value == pytest.approx(1 - tpr[i], abs=2e-3)


@pytest.mark.parametrize("fn", [frame_auroc, eer])
def test_one_class_missing_is_a_value_error(fn) -> None:
    with pytest.raises(ValueError, match="no anomalous"):
        fn(np.arange(4.0), np.zeros(4, bool))
    with pytest.raises(ValueError, match="no normal"):
        fn(np.arange(4.0), np.ones(4, bool))


# --- pixel AUROC ---------------------------------------------------------------------------------------


def test_pixel_auroc_exact_matches_sklearn() -> None:
    maps, masks = random_maps(20, 32, 32)
    result = pixel_auroc(maps, masks, max_pixels=None)
    assert not result.sampled and result.n_used == maps.size
    assert result.auroc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)


def test_pixel_auroc_subsample_is_close_seeded_and_says_so() -> None:
    maps, masks = random_maps(122, 128, 128)  # 2M pixels
    exact = roc_auc_score(masks.ravel(), maps.ravel())
    sub = pixel_auroc(maps, masks, max_pixels=200_000, seed=3)
    assert sub.sampled and sub.n_pixels == maps.size
    assert 190_000 < sub.n_used < 210_000
    assert abs(sub.auroc - exact) < 0.01
    assert pixel_auroc(maps, masks, max_pixels=200_000, seed=3).auroc == sub.auroc


def test_streaming_pixel_auroc_exact_when_everything_fits_and_close_when_not() -> None:
    maps, masks = random_maps(60, 64, 64, seed=4)
    exact = roc_auc_score(masks.ravel(), maps.ravel())
    roomy, tight = PixelAUROC(max_pixels=maps.size), PixelAUROC(max_pixels=10_000, seed=1)
    for i in range(0, 60, 7):  # uneven batches
        roomy.update(maps[i : i + 7], masks[i : i + 7])
        tight.update(maps[i : i + 7], masks[i : i + 7])
    full = roomy.compute()
    assert not full.sampled and full.auroc == pytest.approx(exact, abs=1e-9)
    est = tight.compute()
    assert est.sampled and est.n_used == 10_000 + int(masks.sum()) and est.n_pixels == maps.size
    assert est.n_anomalous == int(masks.sum())
    assert abs(est.auroc - exact) < 0.01


def test_streaming_pixel_auroc_needs_both_classes() -> None:
    acc = PixelAUROC(1000)
    acc.update(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool))
    with pytest.raises(ValueError, match="no anomalous"):
        acc.compute()


# --- AUPRO ---------------------------------------------------------------------------------------------


def hand_example() -> tuple[np.ndarray, np.ndarray]:
    """Frame 0 is normal: 10 pixels 0.05 .. 0.95. Frame 1 has region A (column 0, 2 px at 0.97), region B
    (columns 3-4, 4 px: two at 0.9, two at 0.7) and 4 normal pixels at 0. 14 normal pixels in all.

    Going down in threshold: FPR 0 -> PRO 1/2 (A only); FPR 1/14 -> 3/4 (half of B); FPR 3/14 -> 1.
    Area up to 0.3: 0.5/14 + 0.75 * 2/14 + 1 * (0.3 - 3/14) = 3.2/14; / 0.3 = 16/21.
    """
    maps = np.zeros((2, 2, 5))
    masks = np.zeros((2, 2, 5), bool)
    maps[0] = np.arange(0.05, 1.0, 0.1).reshape(2, 5)
    masks[1, :, 0] = True
    maps[1, :, 0] = 0.97
    masks[1, :, 3:] = True
    maps[1, 0, 3:], maps[1, 1, 3:] = 0.9, 0.7
    return maps, masks


def test_aupro_worked_by_hand() -> None:
    maps, masks = hand_example()
    result = aupro(maps, masks)
    assert result.n_regions == 2 and result.n_normal_pixels == 14
    assert result.aupro == pytest.approx(16 / 21, abs=1e-9)


def test_aupro_weighs_regions_not_pixels() -> None:
    # A 1-pixel region found and a 9-pixel region missed score the same as the reverse.
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 0, 0] = True
    masks[0, 4:7, 4:7] = True
    maps = np.zeros((1, 8, 8))
    small_found = maps.copy()
    small_found[0, 0, 0] = 1.0
    big_found = maps.copy()
    big_found[0, 4:7, 4:7] = 1.0
    assert aupro(small_found, masks).aupro == pytest.approx(aupro(big_found, masks).aupro)
    assert pixel_auroc(small_found, masks).auroc < pixel_auroc(big_found, masks).auroc


def test_aupro_perfect_and_chance() -> None:
    maps, masks = random_maps(10, 32, 32)
    assert aupro(masks.astype(float), masks).aupro == pytest.approx(1.0)
    # A constant map joins (0, 0) to (1, 1): chance, the area of a triangle, 0.3 * 0.3 / 2, over 0.3.
    assert aupro(np.ones(masks.shape), masks, fpr_limit=0.3).aupro == pytest.approx(0.15)


def exact_aupro(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    """Reference: PRO as a weighted TPR (each anomalous pixel weighs 1 / its region size), via sklearn."""
    weights = np.ones(maps.shape)
    for i in range(len(masks)):
        labels, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())
        weights[i][masks[i]] = 1.0 / sizes[labels[masks[i]]]
    fpr, pro, _ = roc_curve(masks.ravel(), maps.ravel(), sample_weight=weights.ravel())
    return area_up_to(fpr, pro, limit) / limit


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_matches_weighted_sklearn_reference(limit: float) -> None:
    maps, masks = random_maps(40, 48, 48, seed=5)
    assert aupro(maps, masks, fpr_limit=limit).aupro == pytest.approx(exact_aupro(maps, masks, limit), abs=3e-3)


def test_streaming_aupro_matches_in_memory() -> None:
    maps, masks = random_maps(60, 48, 48, seed=6)
    acc = AUPRO(fpr_limit=0.3, num_thresholds=500)
    for i in range(0, 60, 10):
        acc.update(maps[i : i + 10], masks[i : i + 10])
    streamed = acc.compute()
    assert streamed.n_regions == aupro(maps, masks).n_regions
    assert streamed.aupro == pytest.approx(exact_aupro(maps, masks, 0.3), abs=5e-3)


def test_streaming_aupro_does_not_depend_on_clip_order() -> None:
    # Thresholds taken from the first clip alone left the second clip's range, 45 times larger, with no
    # curve points at low FPR: the code before 2026-12-07 gave 0.159 in this order, 0.232 in the other and
    # for the whole set.
    a, a_masks = random_maps(20, 32, 32, seed=8)
    b, b_masks = random_maps(20, 32, 32, seed=9)
    a, b = a * 0.1, b * 4.5
    results = []
    for first, second in (((a, a_masks), (b, b_masks)), ((b, b_masks), (a, a_masks))):
        acc = AUPRO(fpr_limit=0.3, num_thresholds=500)
        acc.update(*first)
        acc.update(*second)
        results.append(acc.compute().aupro)
    whole = exact_aupro(np.concatenate([a, b]), np.concatenate([a_masks, b_masks]), 0.3)
    assert results[0] == pytest.approx(whole, abs=5e-3)
    assert results[1] == pytest.approx(whole, abs=5e-3)


def test_sampled_aupro_stays_close_to_exact() -> None:
    maps, masks = random_maps(60, 48, 48, seed=10)
    acc = AUPRO(fpr_limit=0.3, num_thresholds=500, max_pixels=20_000)  # about a seventh of the pixels
    for i in range(0, 60, 10):
        acc.update(maps[i : i + 10], masks[i : i + 10])
    assert acc.n_normal == int((~masks).sum())
    assert acc.compute().aupro == pytest.approx(exact_aupro(maps, masks, 0.3), abs=0.02)


def test_aupro_refuses_nan_maps() -> None:
    maps, masks = random_maps(4, 16, 16, seed=11)
    maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        aupro(maps, masks)


def test_aupro_takes_a_clip_masked_everywhere() -> None:
    # A mask folder whose first clip covers the whole frame has no normal pixel; later clips give them.
    maps, masks = random_maps(10, 16, 16, seed=12)
    full = np.ones((2, 16, 16), bool)
    acc = AUPRO()
    acc.update(maps[:2], full)
    with pytest.raises(ValueError, match="normal pixels"):
        acc.compute()
    acc.update(maps[2:], masks[2:])
    assert 0.0 < acc.compute().aupro <= 1.0


def test_aupro_runs_in_seconds_on_a_thousand_frames() -> None:
    maps, masks = random_maps(1000, 128, 128, seed=7)
    start = time.perf_counter()
    aupro(maps, masks)
    assert time.perf_counter() - start < 15.0  # ~2.5 s on 2 idle cores


# --- UCSD Ped1 pixel criterion ------------------------------------------------------------------------


def coverage_frame(covered: int) -> tuple[np.ndarray, np.ndarray]:
    """A 100-pixel ground truth with ``covered`` of its pixels at 1.0 and the rest at 0."""
    amap = np.zeros((1, 20, 20))
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 5:15, 5:15] = True
    amap[0, 5:15, 5:15].flat[:covered] = 1.0
    return amap, mask


@pytest.mark.parametrize(("covered", "detected"), [(39, 0.0), (40, 1.0), (41, 1.0)])
def test_ped1_forty_percent_rule(covered: int, detected: float) -> None:
    amap, mask = coverage_frame(covered)
    normal = np.zeros((1, 20, 20))
    point = ped1_pixel_criterion(
        np.concatenate([amap, normal]), np.concatenate([mask, np.zeros_like(mask)]), np.array([1, 0]), 0.5
    )
    assert point.tpr == detected and point.fpr == 0.0


def test_ped1_any_pixel_in_a_normal_frame_is_a_false_positive() -> None:
    amap, mask = coverage_frame(100)
    normal = np.zeros((2, 20, 20))
    normal[0, 19, 19] = 0.6  # one pixel above 0.5
    point = ped1_pixel_criterion(
        np.concatenate([amap, normal]), np.concatenate([mask, np.zeros((2, 20, 20), bool)]), [1, 0, 0], 0.5
    )
    assert point.fpr == 0.5 and point.tpr == 1.0


def test_ped1_detection_is_strictly_above_the_threshold() -> None:
    amap, mask = coverage_frame(100)
    maps, masks = np.concatenate([amap, np.zeros((1, 20, 20))]), np.concatenate([mask, np.zeros_like(mask)])
    assert ped1_pixel_criterion(maps, masks, [1, 0], 0.999).tpr == 1.0
    assert ped1_pixel_criterion(maps, masks, [1, 0], 1.0).tpr == 0.0


def test_ped1_roc_worked_by_hand() -> None:
    """Anomalous frames detected below 0.9, 0.8 and 0.4; normal frames fire below 0.6 and 0.2.
    AUC = 5 of 6 (anomalous, normal) pairs ordered right; EER = 1/3 (one miss in three at FPR 1/3)."""
    maps = np.zeros((6, 10, 10))
    masks = np.zeros((6, 10, 10), bool)
    for i, s in enumerate([0.9, 0.8, 0.4]):
        masks[i, 2:4, 2:7] = True  # 10 pixels: the 4th largest decides
        maps[i][masks[i]] = s
        maps[i, 8, 8] = 0.99  # outside the mask: does not count
    maps[3, 0, 0], maps[4, 5, 5] = 0.6, 0.2
    labels = np.array([1, 1, 1, 0, 0, 1], bool)  # frame 5: labelled anomalous, no mask -> skipped
    roc = ped1_pixel_roc(maps, masks, labels)
    assert (roc.n_anomalous, roc.n_normal, roc.n_skipped) == (3, 2, 1)
    assert roc.auc == pytest.approx(5 / 6)
    assert roc.eer == pytest.approx(1 / 3)


def test_ped1_matches_the_definition_on_random_maps() -> None:
    maps, masks = random_maps(40, 24, 24, seed=8)
    labels = masks.any(axis=(1, 2))
    for t in [0.5, 0.8, 0.95, 1.1, 1.3]:
        point = ped1_pixel_criterion(maps, masks, labels, t)
        covered = [(m[g] > t).mean() >= 0.4 for m, g, y in zip(maps, masks, labels, strict=True) if y]
        fired = [(m > t).any() for m, y in zip(maps, labels, strict=True) if not y]
        assert point.tpr == pytest.approx(np.mean(covered)) and point.fpr == pytest.approx(np.mean(fired))
