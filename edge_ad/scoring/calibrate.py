"""Calibration on held-out NORMAL footage only (never on test labels): the run's validation clips, plus any
normal footage of the camera recorded since (``edge-ad calibrate --normal``) that the model never trained on.

Three steps, each needing the previous one: the restoration threshold (an NLL quantile of normal codes),
the per-map normalisation (median and a high quantile of each raw map, or per-pixel statistics, then the
spread of each map's frame score), and the alert threshold on the frame score, set from a false-alarm budget
at the stream's frame rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_ad.alerting import frame_threshold, normal_spread
from edge_ad.config import Config
from edge_ad.data.footage import footage_clips
from edge_ad.data.preprocess import ChannelBuilder, to_model_frame
from edge_ad.data.ucsd import UCSDDataset, open_ucsd
from edge_ad.errors import UserError
from edge_ad.models.prior import code_nll
from edge_ad.models.ssim import gaussian_1d, separable_blur
from edge_ad.scoring.scorer import AnomalyPipeline, AnomalyScorer
from edge_ad.training.frames import clip_tensor, stack
from edge_ad.training.rundir import RunDir

PIXEL_SAMPLE = 2_000_000
# Frames of extra normal footage kept for calibration (20 minutes at 10 frames/s): the per-pixel statistics hold
# every frame's maps in memory. Longer footage is sampled evenly, each kept frame with its true motion channel.
MAX_FOOTAGE_FRAMES = 12_000


def validation_frames(run: RunDir, cfg: Config, data_root: str | Path) -> np.ndarray:
    split = run.read_json("split") if run.split.is_file() else {"val": []}
    ds = open_ucsd(data_root)
    by_name = {c.name: c for c in ds.train}
    names = split.get("val", [])
    if not names:
        names = [c.name for c in ds.train[-1:]]
        print(f"warning: no validation clips were held out; calibrating on {names} (thresholds will be optimistic)")
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UserError(f"{data_root} lacks the validation clips {missing} this run was trained with")
    return stack([clip_tensor(by_name[n], cfg) for n in names])


@torch.no_grad()
def _batched(x: np.ndarray, fn, batch: int = 32) -> list[Any]:
    return [fn(torch.from_numpy(x[i : i + batch]).float()) for i in range(0, len(x), batch)]


def _pixel_sample(maps: list[torch.Tensor], rng: np.random.Generator) -> np.ndarray:
    flat = torch.cat([m.flatten() for m in maps]).numpy()
    if len(flat) > PIXEL_SAMPLE:
        flat = flat[rng.choice(len(flat), PIXEL_SAMPLE, replace=False)]
    return flat


def map_statistics(
    maps: list[torch.Tensor], mode: str, rng: np.random.Generator, sigma: float = 0.0
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(centre, scale) of one raw map on normal frames: scalars, or [H, W] maps when ``mode`` is pixel.

    Per pixel: the mean and standard deviation over the validation frames, both blurred (``sigma``) so that
    a place next to a walker's path counts as busy too, and the deviation floored with half the map's
    overall one so that a pixel that barely varied on a few hundred frames does not blow up. The centre is
    at least the pixel's own median: the blur would spread a small spot the decoder always misses (a lamp)
    thin, and the spot would then light up every frame; a walker passes a pixel in too few frames to move
    its median.
    """
    if mode == "pixel":
        stack = torch.cat([m[:, 0] for m in maps]).double()
        mean, std = stack.mean(0), stack.std(0)
        if sigma > 0:
            kernel = gaussian_1d(2 * math.ceil(3 * sigma) + 1, sigma).double()
            mean, std = (separable_blur(t[None, None], kernel)[0, 0] for t in (mean, std))
            mean = torch.maximum(mean, stack.median(0).values)
        return mean.float(), (std + 0.5 * stack.std()).clamp_min(1e-6).float()
    med, hi = np.quantile(_pixel_sample(maps, rng), [0.5, 0.999])
    return float(med), float(max(hi - med, 1e-6))


def calibrate(pipeline: AnomalyPipeline, cfg: Config, val_x: np.ndarray, seed: int = 0) -> dict[str, Any]:
    scorer = pipeline.scorer
    rng = np.random.default_rng(seed)
    if pipeline.prior is not None:  # kept in every bundle, so restoration can be switched on later
        prior = pipeline.prior

        def nll_of(x: torch.Tensor) -> torch.Tensor:
            codes = pipeline.encode(x)[0]
            return code_nll(prior(codes), codes).flatten()

        nll = torch.cat(_batched(val_x, nll_of)).numpy()
        scorer.restore_threshold.fill_(float(np.quantile(nll, cfg.scoring.restore_quantile)))
    raw = _batched(val_x, pipeline.raw_maps)
    for i, name in enumerate(scorer.names):
        c, s = map_statistics([r[name] for r in raw], cfg.scoring.normalise, rng, cfg.scoring.pixel_stats_sigma)
        scorer.center[i] = c
        scorer.scale[i] = s
        scorer.score_center[i], scorer.score_scale[i] = 0.0, 1.0
        if scorer.fusion != "max":  # a weighted mean keeps the maps' own scales, as the weights were set for
            continue
        with torch.no_grad():
            scores = torch.cat([scorer.reference_score(scorer.single(r, name)) for r in raw]).numpy()
        scorer.score_center[i], scorer.score_scale[i] = normal_spread(scores)
    scorer.area_center.zero_()
    scorer.area_scale.fill_(1.0)
    if len(scorer.topks) > 1 and scorer.frame_mode == "topk":
        with torch.no_grad():
            areas = torch.cat([scorer.area_scores(scorer.combine(r)) for r in raw], dim=1).numpy()
        for a, scores in enumerate(areas):
            scorer.area_center[a], scorer.area_scale[a] = normal_spread(scores)
    scores = torch.cat([s for _, s in _batched(val_x, pipeline)]).numpy()
    alert = frame_threshold(scores, cfg.scoring.false_alarms_per_hour, cfg.scoring.assumed_fps)
    return {
        "maps": scorer.names,
        "normalise": cfg.scoring.normalise,
        # per map; the mean over pixels when normalised per pixel (the maps themselves are in normalisation.safetensors)
        "center": scorer.center.mean((1, 2)).tolist(),
        "scale": scorer.scale.mean((1, 2)).tolist(),
        # each map's frame score on these frames: median and 99th percentile - median, before the fusion
        "score_center": scorer.score_center.tolist(),
        "score_scale": scorer.score_scale.tolist(),
        # with several top-k areas: each area's score of the fused map, median and 99th percentile - median
        "topk_areas": cfg.scoring.topk_areas(),
        "area_center": scorer.area_center.tolist(),
        "area_scale": scorer.area_scale.tolist(),
        "restore_threshold": float(scorer.restore_threshold),
        **alert,
        "pixel_threshold": alert["threshold"],
        "map_scale": 2.0 * max(alert["threshold"], 1e-6),
        "false_alarms_per_hour": cfg.scoring.false_alarms_per_hour,
        "assumed_fps": cfg.scoring.assumed_fps,
        "val_frames": int(len(val_x)),
    }


def save_normalisation(run: RunDir, scorer: AnomalyScorer) -> None:
    from safetensors.torch import save_file

    save_file({n: getattr(scorer, n).contiguous() for n in scorer.CALIBRATED}, str(run.normalisation))


def _training_folders(run: RunDir, ds: UCSDDataset) -> set[Path]:
    names = set(run.read_json("split").get("train", [])) if run.split.is_file() else {c.name for c in ds.train}
    return {c.frame_paths[0].parent.resolve() for c in ds.train if c.name in names and c.frame_paths}


def footage_frames(
    paths: list[Path], cfg: Config, run: RunDir, data_root: str | Path, budget: int = MAX_FOOTAGE_FRAMES
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Model-ready frames of extra normal footage, and what was read from each clip. The footage must be the
    run's camera (its frame size) and must not be what the model trained on: thresholds set on frames the
    model learnt would be optimistic."""
    ds = open_ucsd(data_root)
    camera = ds.train[0].read_frame(0).shape[:2] if ds.train else None
    trained = _training_folders(run, ds)
    clips = [c for p in paths for c in footage_clips(p)]
    for c in clips:
        if c.path.resolve() in trained:
            raise UserError(f"{c.path} is a clip the model trained on; calibrate on normal footage it never saw")
    stride = max(1, math.ceil(sum(c.length for c in clips) / budget))
    kept: list[np.ndarray] = []
    read: list[dict[str, Any]] = []
    for c in clips:
        builder, n, before = ChannelBuilder(cfg.data.temporal_offsets), 0, len(kept)
        for n, frame in enumerate(c.frames(), start=1):
            if camera is not None and frame.shape[:2] != camera:
                raise UserError(
                    f"{c.path} has {frame.shape[1]}x{frame.shape[0]} frames but the run's camera gives "
                    f"{camera[1]}x{camera[0]}; calibrate on footage of the camera the model was trained for"
                )
            channels = builder.push(to_model_frame(frame, cfg.data.size, cfg.data.grayscale))
            if (n - 1) % stride == 0:
                kept.append(channels.astype(np.float16))
        if n == 0:
            raise UserError(f"no frame of {c.path} could be read; check the file, or leave it out")
        read.append({"path": str(c.path), "frames": n, "used": len(kept) - before})
    return np.stack(kept), read


def calibrate_run(run_dir: str | Path, data_root: str | Path, normal: list[Path] | None = None) -> dict[str, Any]:
    """``normal``: extra normal footage of the camera (video files, frame folders, folders of either)."""
    from edge_ad.scoring.load import load_pipeline

    run = RunDir(Path(run_dir))
    cfg, pipeline, _ = load_pipeline(run.root, calibrated=False)
    val_x = validation_frames(run, cfg, data_root)
    footage: list[dict[str, Any]] = []
    if normal:
        extra, footage = footage_frames(list(normal), cfg, run, data_root)
        val_x = np.concatenate([val_x, extra])
    calib = calibrate(pipeline, cfg, val_x, cfg.training.seed)
    calib["normal_footage"] = footage
    save_normalisation(run, pipeline.scorer)
    run.write_json("calibration", calib)
    return calib
