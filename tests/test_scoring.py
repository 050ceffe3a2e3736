"""Scoring options: which channels the pixel maps compare, per-pixel normalisation from normal clips, the fusion of
maps and the published (dilated) map."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from safetensors.torch import save_file

from edge_ad.config import load_config
from edge_ad.data.ucsd import open_ucsd
from edge_ad.errors import UserError
from edge_ad.export.exporter import export_bundle
from edge_ad.models.vqvae import VQVAE
from edge_ad.scoring.calibrate import calibrate_run, map_statistics, validation_frames
from edge_ad.scoring.load import load_pipeline
from edge_ad.scoring.scorer import AnomalyScorer, quantize
from edge_ad.training.frames import clip_tensor
from edge_ad.training.rundir import RunDir

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


def test_maps_may_name_their_channels() -> None:
    """residual@frame and residual@motion are two maps of one run, whatever compare_channels says."""
    cfg = load_config(TINY, ["scoring.weights={residual@motion: 1, residual@frame: 1, residual: 1}"])
    torch.manual_seed(0)
    vqvae = VQVAE.from_config(cfg).eval()
    scorer = AnomalyScorer(vqvae, None, cfg)
    assert scorer.names == ["residual", "residual@frame", "residual@motion"]
    x = torch.rand(2, 2, *cfg.data.size)
    with torch.no_grad():
        codes, distance = quantize(vqvae, vqvae.encoder(x))
        raw = scorer.raw_maps(x, codes, distance, None)
        d = (x - vqvae.decode_codes(codes)).abs()
    torch.testing.assert_close(raw["residual@frame"], d[:, :1])
    torch.testing.assert_close(raw["residual@motion"], d[:, 1:])
    torch.testing.assert_close(raw["residual"], d.amax(1, keepdim=True))


def test_motion_channels_need_temporal_offsets() -> None:
    with pytest.raises(UserError, match="compare_channels=motion needs motion channels"):
        load_config(TINY, ["data.temporal_offsets=[]", "scoring.compare_channels=motion"])
    with pytest.raises(UserError, match=r"residual@motion.*need motion channels"):
        load_config(TINY, ["data.temporal_offsets=[]", "scoring.weights={residual@motion: 1}"])


@pytest.mark.parametrize("bad", ["nll@frame", "residual@colour", "residual@"])
def test_a_map_that_cannot_take_a_channel_group_is_named(bad: str) -> None:
    with pytest.raises(UserError, match=bad):
        load_config(TINY, [f"scoring.weights={{{bad}: 1}}"])


def test_max_fusion_takes_the_surer_map_and_the_published_map_is_dilated() -> None:
    """Each map is scaled by its own frame-score spread; max keeps the map that stands out; the frame score is
    taken before the dilation, the published map after it."""
    cfg = load_config(
        TINY,
        [
            "scoring.weights={residual@frame: 1, residual@motion: 1}",
            "scoring.fusion=max",
            "scoring.smoothing_sigma=0",
            "scoring.map_dilation=3",
            "scoring.frame_score=max",
        ],
    )
    scorer = AnomalyScorer(VQVAE.from_config(cfg).eval(), None, cfg)
    h, w = cfg.data.size
    frame, motion = torch.zeros(1, 1, h, w), torch.zeros(1, 1, h, w)
    frame[0, 0, 2, 2], motion[0, 0, 9, 9] = 4.0, 30.0
    scorer.score_scale.copy_(torch.tensor([2.0, 10.0]))  # the motion map is noisier on normal frames
    raw = {"residual@frame": frame, "residual@motion": motion}
    fused = scorer.combine(raw)
    assert fused[0, 0, 2, 2] == 2.0 and fused[0, 0, 9, 9] == 3.0
    published = scorer.outline(fused)
    assert published[0, 0, 8:11, 8:11].eq(3.0).all() and published[0, 0, 7, 7] < 3.0
    # forward: the frame score of the fused map, the dilated map published
    x = torch.rand(2, 2, h, w)
    with torch.no_grad():
        codes, distance = quantize(scorer.vqvae, scorer.vqvae.encoder(x))
        out_map, out_score = scorer(x, codes, distance)
        fused = scorer.combine(scorer.raw_maps(x, codes, distance, None))
    torch.testing.assert_close(out_score, scorer.frame_score(fused))
    torch.testing.assert_close(out_map, scorer.outline(fused))
    assert (out_map >= fused).all() and (out_map > fused).any()


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


def test_blurred_pixel_statistics_still_discount_a_small_lamp() -> None:
    """The blur spreads a one-pixel lamp thin; the pixel's own median keeps the lamp normal where it is."""
    rng = np.random.default_rng(0)
    normal = torch.from_numpy(rng.uniform(0.0, 0.1, (200, 1, 16, 16))).float()
    normal[:, 0, 3, 3] = torch.from_numpy(rng.uniform(0.8, 1.0, 200)).float()  # the lamp
    normal[:10, 0, 10, 10] = 0.9  # a walker passing in 5 % of the frames
    center, scale = map_statistics([normal], "pixel", rng, sigma=3.0)
    new = torch.full((16, 16), 0.05)
    new[3, 3], new[12, 5] = 0.9, 0.5  # the lamp as usual, and something at (12, 5)
    z = (new - center) / scale
    assert z[3, 3] < 1.0 < z[12, 5]
    # A walker's few frames do not make its place normal for anything brighter.
    assert center[10, 10] < 0.2


def test_pixel_normalisation_is_saved_with_the_run_and_loaded_back(
    edited_run: Callable, tiny_scene: Path, exported_like_torch: Callable
) -> None:
    weights = {"residual@frame": 1.0, "residual@motion": 1.0, "ssim": 1.0}
    run = edited_run(
        lambda cfg: cfg["scoring"].update(
            normalise="pixel", compare_channels="motion", weights=weights, fusion="max", map_dilation=3
        )
    )
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    calib = calibrate_run(run, tiny_scene)
    assert calib["normalise"] == "pixel"
    config, pipeline, _ = load_pipeline(run)
    scorer = pipeline.scorer
    assert scorer.center.shape[1:] == tuple(cfg["data"]["size"])
    assert float(scorer.center.std()) > 0  # one value per pixel, not one per map
    # Each map's frame score on the validation frames: median 0, 99th percentile 1 (what the fusion compares).
    val = torch.from_numpy(validation_frames(RunDir(run), config, tiny_scene)).float()
    with torch.no_grad():
        raw = pipeline.raw_maps(val)
        for name in scorer.names:
            mid, hi = np.quantile(scorer.frame_score(scorer.single(raw, name)).numpy(), [0.5, 0.99])
            assert abs(mid) < 1e-4 and abs(hi - 1) < 1e-4, name
    # The per-pixel statistics travel inside the exported graph: ONNX Runtime gives the same maps.
    exported_like_torch(run)
    # A run calibrated before the frame-score scaling existed: told to calibrate again, not a KeyError.
    save_file({"center": scorer.center, "scale": scorer.scale}, str(run / "normalisation.safetensors"))
    with pytest.raises(UserError, match="calibrate --run"):
        load_pipeline(run)
    (run / "normalisation.safetensors").unlink()
    with pytest.raises(UserError, match="calibrate --run"):
        load_pipeline(run)


def test_one_map_may_be_normalised_globally_among_per_pixel_maps(edited_run: Callable, tiny_scene: Path) -> None:
    """normalise_maps overrides normalise for the maps it names: the NLL gets one centre and spread, the
    residual one per pixel; calibration.json says which map got which."""
    weights = {"residual@motion": 1.0, "nll": 0.5}
    run = edited_run(
        lambda cfg: cfg["scoring"].update(
            normalise="pixel", normalise_maps={"nll": "global"}, weights=weights, fusion="max"
        )
    )
    calib = calibrate_run(run, tiny_scene)
    assert calib["normalise_maps"] == {"residual@motion": "pixel", "nll": "global"}
    _, pipeline, _ = load_pipeline(run)
    scorer = pipeline.scorer
    assert scorer.names == ["residual@motion", "nll"]
    assert float(scorer.center[0].std()) > 0  # per pixel
    for stat in (scorer.center[1], scorer.scale[1]):  # one value for the whole map
        assert bool((stat == stat[0, 0]).all())
    # The global centre is the median of the validation NLL map's pixels, not the per-pixel mean of a moment ago.
    config = load_config(run / "config.yaml")
    val = torch.from_numpy(validation_frames(RunDir(run), config, tiny_scene)).float()
    with torch.no_grad():
        nll = pipeline.raw_maps(val)["nll"]
    assert abs(float(scorer.center[1, 0, 0]) - float(nll.median())) < 0.05 * float(nll.std())


def test_normalise_maps_must_name_a_weighted_map() -> None:
    with pytest.raises(UserError, match=r"normalise_maps names \['nl'\], which scoring.weights does not weight"):
        load_config(TINY, ["scoring.weights={residual: 1, nll: 1}", "scoring.normalise_maps={nl: global}"])


def test_several_topk_areas_let_a_small_bright_spot_outrank_a_large_faint_blob() -> None:
    """An area of 2 % sees a 12-pixel spot diluted by the rest of its top-k; a 0.3 % area sees it whole.
    Each area's score is standardised (its spread on normal frames differs) before their max."""
    cfg = load_config(TINY, ["scoring.weights={residual: 1}", "scoring.topk_fraction=0.02"])
    one = AnomalyScorer(VQVAE.from_config(cfg).eval(), None, cfg)
    cfg = load_config(
        TINY, ["scoring.weights={residual: 1}", "scoring.topk_fraction=0.02", "scoring.extra_topk_fractions=[0.003]"]
    )
    both = AnomalyScorer(VQVAE.from_config(cfg).eval(), None, cfg)
    h, w = cfg.data.size
    assert (h, w) == (64, 64) and both.topks == [82, 12]
    spot, blob = torch.zeros(2, 1, h, w), torch.zeros(2, 1, h, w)
    spot[0, 0, :3, :4] = 5.0  # 12 pixels
    blob[0, 0, 20:30, 20:40] = 1.0  # 200 pixels
    both.area_center.copy_(torch.tensor([0.1, 0.2]))
    both.area_scale.copy_(torch.tensor([1.0, 4.0]))  # the small area is noisier on normal frames
    assert one.frame_score(spot)[0] < one.frame_score(blob)[0]
    assert both.frame_score(spot)[0] > both.frame_score(blob)[0]
    for m in (spot, blob):
        areas = torch.stack([m.flatten(1).topk(k).values.mean(1) for k in (82, 12)])
        expected = ((areas - both.area_center[:, None]) / both.area_scale[:, None]).amax(0)
        torch.testing.assert_close(both.frame_score(m), expected)


def test_topk_areas_are_calibrated_on_normal_frames_and_travel_in_the_bundle(
    edited_run: Callable, tiny_scene: Path, tmp_path: Path
) -> None:
    run = edited_run(lambda cfg: cfg["scoring"].update(topk_fraction=0.01, extra_topk_fractions=[0.002, 0.05]))
    calib = calibrate_run(run, tiny_scene)
    assert calib["topk_areas"] == [0.01, 0.002, 0.05]
    config, pipeline, _ = load_pipeline(run)
    scorer = pipeline.scorer
    val = torch.from_numpy(validation_frames(RunDir(run), config, tiny_scene)).float()
    with torch.no_grad():
        areas = scorer.area_scores(scorer.combine(pipeline.raw_maps(val)))
        z = (areas - scorer.area_center[:, None]) / scorer.area_scale[:, None]
        scores = pipeline(val)[1]
    for a, each in enumerate(z.numpy()):  # every area: median 0, 99th percentile 1 on the normal frames
        mid, hi = np.quantile(each, [0.5, 0.99])
        assert abs(mid) < 1e-4 and abs(hi - 1) < 1e-4, a
    torch.testing.assert_close(scores, z.amax(0))
    assert calib["threshold"] > float(scores.max())  # the alert threshold is set on the same scores
    # The areas and their statistics are constants of the exported graph: ONNX Runtime scores alike.
    bundle = export_bundle(run, tmp_path / "bundle")
    session = ort.InferenceSession(str(bundle.graph("pipeline")), providers=["CPUExecutionProvider"])
    _, ort_scores = session.run(None, {"frames": val[:8].numpy()})
    np.testing.assert_allclose(ort_scores, scores[:8].numpy(), atol=1e-3)
    # Other areas than the run was calibrated for: told to calibrate again, not scored with stale statistics.
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["scoring"]["extra_topk_fractions"] = [0.003, 0.05]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match="calibrate --run"):
        load_pipeline(run)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("pixel_stats_sigma", 7.0, "calibrated with scoring.pixel_stats_sigma=24.0, its config now has 7.0"),
        ("speed_window", 3.0, "calibrated with scoring.speed_window=2.0, its config now has 3.0"),
        ("weights", {"residual": 1.0, "speed": 1.0}, "its config now weights ['residual', 'speed']"),
    ],
)
def test_a_scoring_edit_after_calibration_asks_for_a_new_one(
    edited_run: Callable, key: str, value: object, message: str
) -> None:
    """Statistics set for other maps would score silently wrong: the run refuses to load until calibrated again,
    and the CLI says so in one line."""
    import subprocess
    import sys

    run = edited_run(lambda cfg: cfg["scoring"].update({key: value}))
    with pytest.raises(UserError, match="calibrate --run") as err:
        load_pipeline(run)
    assert message in str(err.value)
    cli = subprocess.run(
        [sys.executable, "-m", "edge_ad.cli.main", "export", "--run", str(run), "--out", str(run.parent / "b")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode != 0 and "Traceback" not in cli.stderr
    assert message in cli.stderr and len(cli.stderr.strip().splitlines()) == 1, cli.stderr


def test_the_published_maps_dilation_needs_no_new_calibration(edited_run: Callable) -> None:
    """map_dilation acts after the frame score and the statistics: the scores stay those of the calibration."""
    run = edited_run(lambda cfg: cfg["scoring"].update(map_dilation=5))
    _, pipeline, calib = load_pipeline(run)
    assert calib is not None and calib["scoring"]["map_dilation"] != 5 and pipeline.scorer.map_dilation == 5


def test_a_scoring_option_newer_than_the_calibration_does_not_invalidate_it(edited_run: Callable) -> None:
    """An option the calibration does not know (added to the config since) is compared with nothing; the
    options it knows still are."""
    run = edited_run(lambda cfg: None)
    calib = json.loads((run / "calibration.json").read_text())
    del calib["scoring"]["speed_window"]
    (run / "calibration.json").write_text(json.dumps(calib))
    load_pipeline(run)
    calib["scoring"]["pixel_stats_sigma"] = 7.0
    (run / "calibration.json").write_text(json.dumps(calib))
    with pytest.raises(UserError, match="scoring.pixel_stats_sigma=7.0"):
        load_pipeline(run)


def test_a_run_calibrated_before_frame_score_areas_still_loads(edited_run: Callable, tiny_scene: Path) -> None:
    """One area needs no area statistics: an older normalisation file and calibration still score alike."""
    from safetensors.torch import load_file

    run = edited_run(lambda cfg: None)
    _, pipeline, _ = load_pipeline(run)
    x = torch.from_numpy(clip_tensor(open_ucsd(tiny_scene).test[0], load_config(run / "config.yaml")).frames[:4])
    with torch.no_grad():
        before = pipeline(x.float())[1]
    # (and before the background map, which this run does not weight)
    saved = load_file(str(run / "normalisation.safetensors"))
    norm = {k: v for k, v in saved.items() if not k.startswith("area_") and k != "background"}
    save_file(norm, str(run / "normalisation.safetensors"))
    calib = json.loads((run / "calibration.json").read_text())
    for key in ("topk_areas", "area_center", "area_scale"):
        del calib[key]
    (run / "calibration.json").write_text(json.dumps(calib))
    _, pipeline, _ = load_pipeline(run)
    with torch.no_grad():
        torch.testing.assert_close(pipeline(x.float())[1], before)


def test_extra_areas_need_a_topk_frame_score() -> None:
    with pytest.raises(UserError, match="extra_topk_fractions needs frame_score: topk"):
        load_config(TINY, ["scoring.frame_score=max", "scoring.extra_topk_fractions=[0.005]"])


def test_calibration_refuses_what_would_give_a_nan_threshold(tiny_run: Path, tiny_scene: Path) -> None:
    from edge_ad.scoring.calibrate import calibrate

    cfg, pipeline, _ = load_pipeline(tiny_run)
    x = validation_frames(RunDir(tiny_run), cfg, tiny_scene)
    with pytest.raises(UserError, match="at least 2 normal frames and got 1"):
        calibrate(pipeline, cfg, x[:1])
    broken = x[:8].copy()
    broken[3, :, 10:20, 10:20] = np.nan  # a frame the maps cannot score: NaN statistics, a NaN threshold
    with pytest.raises(UserError, match="NaN or infinity in center, scale"):
        calibrate(pipeline, cfg, broken)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.clear(), r"\(threshold: Field required\)"),
        (lambda c: c.pop("maps"), r"\(maps: Field required\)"),
        (lambda c: c.pop("threshold"), r"\(threshold: Field required\)"),
        (lambda c: c.update(threshold="high"), r"\(threshold: Input should be a valid number"),
        (lambda c: c.update(restore_threshold=None), r"\(restore_threshold: Input should be a valid number"),
        (lambda c: c.update(map_scale=0), r"\(map_scale: Input should be greater than 0"),
    ],
)
def test_a_calibration_with_a_bad_field_is_one_line(edited_run: Callable, edit: Callable, message: str) -> None:
    run = edited_run(lambda cfg: None)
    calib = json.loads((run / "calibration.json").read_text())
    edit(calib)
    (run / "calibration.json").write_text(json.dumps(calib))
    with pytest.raises(UserError, match=r"calibration.json is damaged " + message + r".*edge-ad calibrate --run"):
        load_pipeline(run)
