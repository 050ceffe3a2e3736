"""Scoring options: which channels the pixel maps compare, and per-pixel normalisation from normal clips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from edge_ad.config import load_config
from edge_ad.data.ucsd import open_ucsd
from edge_ad.errors import UserError
from edge_ad.export.exporter import export_bundle
from edge_ad.models.vqvae import VQVAE
from edge_ad.scoring.calibrate import calibrate_run, map_statistics
from edge_ad.scoring.load import load_pipeline
from edge_ad.scoring.scorer import AnomalyScorer, quantize
from edge_ad.training.frames import clip_tensor

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


@pytest.mark.parametrize(("channels", "picked"), [("frame", [0]), ("motion", [1]), ("all", [0, 1])])
def test_residual_compares_the_chosen_channels(channels: str, picked: list[int]) -> None:
    cfg = load_config(TINY, ["scoring.weights={residual: 1}", f"scoring.compare_channels={channels}"])
    torch.manual_seed(0)
    vqvae = VQVAE.from_config(cfg).eval()
    scorer = AnomalyScorer(vqvae, None, cfg)
    x = torch.rand(2, 2, *cfg.data.size)
    with torch.no_grad():
        codes, distance = quantize(vqvae, vqvae.encoder(x))
        residual = scorer.raw_maps(x, codes, distance, None)["residual"]
        expected = (x - vqvae.decode_codes(codes))[:, picked].abs().amax(1, keepdim=True)
    torch.testing.assert_close(residual, expected)


def test_motion_channels_need_temporal_offsets() -> None:
    with pytest.raises(UserError, match="compare_channels=motion needs motion channels"):
        load_config(TINY, ["data.temporal_offsets=[]", "scoring.compare_channels=motion"])


def test_pixel_normalisation_discounts_a_place_that_is_always_hard() -> None:
    """A lamp that never reconstructs well outranks a new object globally, but not per pixel."""
    rng = np.random.default_rng(0)
    normal = torch.from_numpy(rng.uniform(0.0, 0.1, (200, 1, 8, 8))).float()
    normal[:, 0, 0, 0] = torch.from_numpy(rng.uniform(0.8, 1.0, 200)).float()  # the lamp
    new = torch.full((8, 8), 0.05)
    new[0, 0], new[5, 5] = 0.9, 0.5  # the lamp as usual, and something at (5, 5)
    for mode, lamp_wins in (("global", True), ("pixel", False)):
        center, scale = map_statistics([normal], mode, rng)
        z = (new - center) / scale
        assert (z[0, 0] > z[5, 5]).item() is lamp_wins, mode
    # Blurred statistics: the lamp's neighbour counts as a busy place too.
    center, _ = map_statistics([normal], "pixel", rng, sigma=1.0)
    assert center[0, 1] > 2 * center[5, 5]


def test_pixel_normalisation_is_saved_with_the_run_and_loaded_back(
    tiny_run: Path, tiny_scene: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["scoring"].update(normalise="pixel", compare_channels="motion", weights={"residual": 1.0, "ssim": 1.0})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    calib = calibrate_run(run, tiny_scene)
    assert calib["normalise"] == "pixel"
    _, pipeline, _ = load_pipeline(run)
    center = pipeline.scorer.center
    assert center.shape[1:] == tuple(cfg["data"]["size"])
    assert float(center.std()) > 0  # one value per pixel, not one per map
    # The per-pixel statistics travel inside the exported graph: ONNX Runtime gives the same maps.
    bundle = export_bundle(run, tmp_path / "bundle")
    x = torch.from_numpy(
        clip_tensor(open_ucsd(tiny_scene).test[0], load_config(run / "config.yaml")).frames[:8]
    ).float()
    session = ort.InferenceSession(str(bundle.graph("pipeline")), providers=["CPUExecutionProvider"])
    ort_map, _ = session.run(None, {"frames": x.numpy()})
    with torch.no_grad():
        torch_map, _ = pipeline(x)
    # (a code on a tie may flip between the two runtimes; a missing normalisation would move every pixel)
    assert np.quantile(np.abs(ort_map - torch_map.numpy()), 0.99) < 1e-3
    (run / "normalisation.safetensors").unlink()
    with pytest.raises(UserError, match="calibrate --run"):
        load_pipeline(run)
