"""The background map: the empty scene it learns from normal frames, what it lights up, and that the background
travels with the run's calibration and inside the exported graph."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from edge_ad.config import Config, load_config
from edge_ad.errors import UserError
from edge_ad.models.vqvae import VQVAE
from edge_ad.scoring.calibrate import calibrate_run, scene_background, validation_frames
from edge_ad.scoring.load import load_pipeline
from edge_ad.scoring.scorer import AnomalyScorer, quantize
from edge_ad.training.rundir import RunDir

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def _walk(frames: int = 40, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(frames [N, 2, H, W] of a textured scene a bright square walks across, the scene alone [H, W])."""
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.2, 0.6, (size, size)).astype(np.float32)
    x = np.repeat(scene[None, None], frames, axis=0)
    x = np.concatenate([x, np.full_like(x, 0.5)], axis=1)  # a still motion channel
    for f in range(frames):
        c = f * (size - 4) // frames
        x[f, 0, 10:14, c : c + 4] = 1.0
    return x, scene


def test_the_background_is_the_scene_without_the_walker() -> None:
    x, scene = _walk()
    background = scene_background(x, colour=1)
    assert background.shape == (1, 32, 32)
    np.testing.assert_allclose(background[0], scene, atol=1e-6)
    assert not np.allclose(x[:, 0].mean(0), scene, atol=1e-2)  # a mean would keep a trace of it


def _scorer() -> AnomalyScorer:
    cfg = load_config(TINY, ["data.size=[32,32]", "scoring.weights={background: 1}"])
    return AnomalyScorer(VQVAE.from_config(cfg).eval(), None, cfg)


def _encoded(scorer: AnomalyScorer, frame: np.ndarray) -> tuple[torch.Tensor, ...]:
    x = torch.from_numpy(frame)
    return x, *quantize(scorer.vqvae, scorer.vqvae.encoder(x)), None


def test_the_map_lights_up_a_new_object_and_not_a_change_of_light() -> None:
    x, scene = _walk()
    scorer = _scorer()
    scorer.background.copy_(torch.from_numpy(scene_background(x, 1)))
    frame = np.concatenate([scene[None], np.full_like(scene[None], 0.5)])[None].copy()
    lit = frame.copy()
    lit[0, 0] += 0.1  # the sun comes out
    cart = lit.copy()
    cart[0, 0, 20:28, 4:16] = 0.95
    with torch.no_grad():
        maps = [scorer.raw_maps(*_encoded(scorer, f))["background"][0, 0] for f in (frame, lit, cart)]
    assert float(maps[0].max()) < 1e-6 and float(maps[1].max()) < 1e-6
    inside, outside = maps[2][20:28, 4:16], maps[2][:16]
    assert float(inside.min()) > 0.2 and float(outside.max()) < 0.05


def test_the_background_map_is_a_known_map_without_channel_groups() -> None:
    assert "background" in Config.model_validate({"scoring": {"weights": {"background": 1}}}).scoring.weights
    with pytest.raises(UserError, match="unknown map"):
        load_config(TINY, ["scoring.weights={background@motion: 1}"])


def test_the_background_is_calibrated_saved_and_exported(
    edited_run: Callable, tiny_scene: Path, exported_like_torch: Callable
) -> None:
    weights = {"residual@motion": 1.0, "background": 0.75}
    run = edited_run(lambda cfg: cfg["scoring"].update(normalise="pixel", weights=weights, fusion="max"))
    calib = calibrate_run(run, tiny_scene)
    assert calib["maps"] == ["residual@motion", "background"]
    config, pipeline, _ = load_pipeline(run)
    val = validation_frames(RunDir(run), config, tiny_scene)
    np.testing.assert_allclose(pipeline.scorer.background.numpy(), np.median(val[:, :1], axis=0), atol=1e-6)
    exported_like_torch(run)
    # A normalisation file without the background (saved before the map existed) is refused for this run.
    norm = {k: v for k, v in load_file(str(run / "normalisation.safetensors")).items() if k != "background"}
    save_file(norm, str(run / "normalisation.safetensors"))
    with pytest.raises(UserError, match="calibrate --run"):
        load_pipeline(run)
