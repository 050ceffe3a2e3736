"""The speed map: what it reads off a known motion, how it reaches the scorer from the model's channels, and
that it travels in the exported graph."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge_ad.config import load_config
from edge_ad.data.preprocess import model_channels
from edge_ad.errors import UserError
from edge_ad.models.vqvae import VQVAE
from edge_ad.scoring.calibrate import calibrate_run
from edge_ad.scoring.load import load_pipeline
from edge_ad.scoring.scorer import AnomalyScorer, quantize
from edge_ad.scoring.speed import Speed

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
SUB = 16  # cv2 drawing at 1/16 px


def walker(x: float, contrast: float, size: int = 64) -> np.ndarray:
    """A 4 x 12 px figure at column ``x`` (sub-pixel) on faintly textured paving, values in [0, 1]."""
    rng = np.random.default_rng(0)
    img = 0.5 + 0.02 * cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.5)
    pts = np.array([[x, 26], [x + 4, 26], [x + 4, 38], [x, 38]]) * SUB
    cv2.fillConvexPoly(img, pts.round().astype(np.int32), 0.5 - contrast, cv2.LINE_AA, 4)
    return img.astype(np.float32)


def measured(before: np.ndarray, after: np.ndarray, steps: int = 1) -> torch.Tensor:
    with torch.no_grad():
        return Speed()(torch.from_numpy(after)[None, None], torch.from_numpy(before)[None, None], steps)[0, 0]


def figure_speed(d: float, contrast: float) -> float:
    """The median speed read where the frames differ: the figure's leading and trailing parts."""
    before, after = walker(20, contrast), walker(20 + d, contrast)
    return float(np.median(measured(before, after).numpy()[np.abs(after - before) > 0.05]))


def test_speed_reads_a_known_motion_whatever_the_contrast() -> None:
    """About the figure's displacement (within 45 %, 1 to 3 px a frame: a walker's speed to a cyclist's;
    measured 1.26 / 2.62 / 4.22 at contrast 0.3, 1.11 / 2.25 / 3.25 at 0.15), at two contrasts within 30 % of
    each other (a frame difference would differ twofold), nothing where nothing moved."""
    for contrast in (0.3, 0.15):
        got = {d: figure_speed(d, contrast) for d in (1, 2, 3)}
        assert all(abs(v - d) < 0.45 * d for d, v in got.items()), (contrast, got)
    for d in (1, 2, 3):
        assert abs(figure_speed(d, 0.3) / figure_speed(d, 0.15) - 1) < 0.3
    still = measured(walker(20, 0.3), walker(20, 0.3))
    assert float(still.amax()) < 0.05
    moving = measured(walker(20, 0.3), walker(22, 0.3))
    assert float(moving[2:12, :].amax()) < 0.05  # paving far above the figure


def test_speed_is_per_frame_over_several_steps() -> None:
    """A figure moving 1 px a frame, seen two frames apart (2 px), reads about 1 px a frame with steps=2: a
    walker's speed, whatever the motion channel's offset."""
    before, after = walker(20, 0.3), walker(22, 0.3)
    moving = np.abs(after - before) > 0.05
    assert abs(float(np.median(measured(before, after, steps=2).numpy()[moving])) - 1.0) < 0.45


def test_scorer_takes_speed_from_the_frame_and_its_motion_channel() -> None:
    """The model input holds the frame and 0.5 + (frame - earlier) / 2; the scorer's speed map is the speed
    between the frames that preprocessing was given."""
    cfg = load_config(TINY, ["data.size=[64, 64]", "data.temporal_offsets=[2]", "scoring.weights={speed: 1}"])
    frames = [(walker(20 + t, 0.3) * 255).astype(np.uint8) for t in range(3)]
    x = torch.from_numpy(np.stack(list(model_channels(frames, (64, 64), True, [2])))).float()
    torch.manual_seed(0)
    vqvae = VQVAE.from_config(cfg).eval()
    scorer = AnomalyScorer(vqvae, None, cfg)
    with torch.no_grad():
        raw = scorer.raw_maps(x, *quantize(vqvae, vqvae.encoder(x)), None)["speed"]
    expected = measured(frames[0] / np.float32(255), frames[2] / np.float32(255), steps=2)
    torch.testing.assert_close(raw[2, 0], expected, atol=1e-4, rtol=1e-4)
    assert float(raw[0].amax()) < 0.05  # the first frame has no history: its own copy stands in


def test_speed_needs_motion_channels() -> None:
    with pytest.raises(UserError, match=r"\['speed'\] need motion channels"):
        load_config(TINY, ["data.temporal_offsets=[]", "scoring.weights={speed: 1}"])


def test_speed_is_calibrated_and_exported_with_the_residuals(
    edited_run: Callable, tiny_scene: Path, exported_like_torch: Callable
) -> None:
    weights = {"residual@motion": 1.0, "residual@frame": 0.5, "speed": 0.75}
    run = edited_run(lambda cfg: cfg["scoring"].update(normalise="pixel", weights=weights, fusion="max"))
    calib = calibrate_run(run, tiny_scene)
    assert calib["maps"] == ["residual@frame", "residual@motion", "speed"]
    config, pipeline, _ = load_pipeline(run)
    assert float(pipeline.scorer.center[2].std()) > 0  # speed normalised per pixel like the residuals
    exported_like_torch(run)
