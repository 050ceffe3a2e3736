"""Baselines on a synthetic clip: a static textured background and one moving textured square."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_ad.evaluation.baselines import MOG2, FrameDifference
from edge_ad.evaluation.methods import FrameScoreRule, MapMethod, frame_score_from_map, resize_maps

H, W, SIDE = 96, 128, 20


def background(rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur((rng.random((H, W)) * 200 + 20).astype(np.uint8), (0, 0), 2)


def moving_square_clip(seed: int = 0, frames: int = 24, still: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``still`` frames of background alone, then a bright textured square crossing it; sensor noise on all."""
    rng = np.random.default_rng(seed)
    bg = background(np.random.default_rng(100))
    texture = rng.integers(160, 256, (SIDE, SIDE))
    clip, masks = [], []
    for t in range(frames):
        frame = bg.astype(np.int16) + rng.integers(-2, 3, (H, W))
        mask = np.zeros((H, W), bool)
        if t >= still:
            x = 8 + 4 * (t - still)
            frame[40 : 40 + SIDE, x : x + SIDE] = texture
            mask[40 : 40 + SIDE, x : x + SIDE] = True
        clip.append(np.clip(frame, 0, 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(clip), np.stack(masks)


def normal_frames(n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(1)
    bg = background(np.random.default_rng(100))
    return np.stack([np.clip(bg.astype(np.int16) + rng.integers(-2, 3, (H, W)), 0, 255).astype(np.uint8)] * n)


def warmed_mog2() -> MOG2:
    mog = MOG2(history=50)
    mog.warm_up(normal_frames())
    return mog


@pytest.mark.parametrize("make", [FrameDifference, warmed_mog2], ids=["frame-diff", "mog2"])
def test_baselines_light_up_the_square_not_the_background(make) -> None:
    method: MapMethod = make()
    assert isinstance(method, MapMethod)
    frames, masks = moving_square_clip()
    method.reset()
    maps, scores = method.score_clip(frames)
    assert maps.dtype == np.float32 and maps.shape == (len(frames), 128, 128)
    assert scores.dtype == np.float32 and scores.shape == (len(frames),)
    full = resize_maps(maps, (H, W))[6:]
    inside, outside = full[masks[6:]].mean(), full[~masks[6:]].mean()
    assert inside > 10 * outside
    # every frame with the square outscores every frame without it
    assert scores[6:].min() > scores[:6].max()


@pytest.mark.parametrize("make", [FrameDifference, warmed_mog2], ids=["frame-diff", "mog2"])
def test_state_carries_across_calls_until_reset(make) -> None:
    method = make()
    frames, _ = moving_square_clip()
    method.reset()
    whole_maps, whole_scores = method.score_clip(frames)
    method.reset()
    parts = [method.score_clip(frames[i : i + 5]) for i in range(0, len(frames), 5)]
    np.testing.assert_allclose(np.concatenate([m for m, _ in parts]), whole_maps, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([s for _, s in parts]), whole_scores, atol=1e-6)


def test_frame_difference_has_no_motion_on_the_first_frame() -> None:
    frames, _ = moving_square_clip(still=0)
    method = FrameDifference(k=2)
    maps, scores = method.score_clip(frames[:3])
    assert scores[0] == 0.0 and scores[1] > 0.0


def test_mog2_reset_restarts_from_the_warm_up() -> None:
    mog = warmed_mog2()
    frames, _ = moving_square_clip()
    first = mog.score_clip(frames)[1]
    mog.reset()
    np.testing.assert_array_equal(mog.score_clip(frames)[1], first)
    cold = MOG2(history=50)
    cold_scores = cold.score_clip(frames)[1]
    assert not np.array_equal(cold_scores, first)  # the warm-up is what the reset replays


def test_frame_score_rules() -> None:
    rng = np.random.default_rng(3)
    maps = rng.random((4, 20, 20)).astype(np.float32)
    top4 = np.sort(maps.reshape(4, -1), axis=1)[:, -4:].mean(axis=1)
    np.testing.assert_allclose(frame_score_from_map(maps, "topk", topk_fraction=0.01), top4, rtol=1e-6)
    np.testing.assert_allclose(frame_score_from_map(maps, "max"), maps.max(axis=(1, 2)))
    assert frame_score_from_map(maps[0], "max") == pytest.approx(maps[0].max())
    spike = np.zeros((20, 20), np.float32)
    spike[10, 10] = 1.0
    assert frame_score_from_map(spike, "max", smoothing_sigma=2.0) < 0.1  # one hot pixel is spread out
    with pytest.raises(ValueError, match="unknown frame score mode"):
        frame_score_from_map(maps, "mean")


def test_resize_maps_to_mask_resolution() -> None:
    maps = np.full((3, 16, 16), 0.25, np.float32)
    maps[:, :, 8:] = 0.75
    out = resize_maps(maps, (40, 60))
    assert out.shape == (3, 40, 60) and out.dtype == np.float32
    assert out[:, :, :20].max() == pytest.approx(0.25) and out[:, :, -20:].min() == pytest.approx(0.75)


def test_a_rule_over_several_areas_is_standardised_on_normal_maps() -> None:
    rng = np.random.default_rng(5)
    normal = rng.random((50, 20, 20)).astype(np.float32)
    rule = FrameScoreRule("topk", (0.01, 0.05))
    with pytest.raises(ValueError, match="fit"):
        rule(normal)
    rule.fit(normal)
    by_area = np.stack([frame_score_from_map(normal, "topk", a) for a in (0.01, 0.05)])
    mid, hi = np.quantile(by_area, [0.5, 0.99], axis=1)
    np.testing.assert_allclose(rule.center, mid, rtol=1e-6)
    np.testing.assert_allclose(rule.scale, hi - mid, rtol=1e-6)
    test = rng.random((3, 20, 20)).astype(np.float32)
    expected = np.stack([frame_score_from_map(test, "topk", a) for a in (0.01, 0.05)])
    expected = ((expected - mid[:, None]) / (hi - mid)[:, None]).max(axis=0)
    np.testing.assert_allclose(rule(test), expected, rtol=1e-5)
    assert rule(test[0]).shape == ()  # one map, one score
    one = FrameScoreRule("topk", (0.01,))  # one area: the plain top-k mean, nothing to fit
    assert not one.needs_fit
    np.testing.assert_allclose(one(test), frame_score_from_map(test, "topk", 0.01))


def test_calibrating_a_baseline_sets_its_threshold_and_leaves_no_state_behind() -> None:
    frames, _ = moving_square_clip()
    mog = warmed_mog2()
    mog.rule = FrameScoreRule("topk", (0.01, 0.05))
    normal = normal_frames()
    mog.calibrate([normal], false_alarms_per_hour=1.0, fps=10.0)
    assert len(mog.rule.center) == 2
    mog.reset()
    normal_scores = mog.score_clip(normal)[1]
    assert mog.alert_threshold > normal_scores.max()  # 1 an hour: above every frame of a short clip
    mog.reset()
    fitted = mog.score_clip(frames)[0]
    plain = warmed_mog2()
    np.testing.assert_array_equal(fitted, plain.score_clip(frames)[0])  # same maps as a fresh, warmed MOG2


def test_calibrating_on_several_clips_sees_no_motion_at_their_seams() -> None:
    """A bright clip then a dark one: their seam is a cut, not motion, and must not set the threshold."""
    bright = normal_frames(20)
    dark = (bright // 4).astype(np.uint8)
    fd = FrameDifference()
    fd.calibrate([bright, dark], false_alarms_per_hour=1.0, fps=10.0)
    apart = fd.alert_threshold
    fd.calibrate([np.concatenate([bright, dark])], false_alarms_per_hour=1.0, fps=10.0)
    assert fd.alert_threshold > 10 * apart  # one clip: the cut is the worst frame
    each = []
    for clip in (bright, dark):
        fd.calibrate([clip], false_alarms_per_hour=1.0, fps=10.0)
        each.append(fd.alert_threshold)
    assert apart <= 1.5 * max(each)
