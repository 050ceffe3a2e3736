"""Calibration on held-out NORMAL footage only (never on test labels): the run's validation clips, plus any
normal footage of the camera recorded since (``edge-ad calibrate --normal``) that the model never trained on.

Three steps, each needing the previous one: the restoration threshold (an NLL quantile of normal codes)
and the background map's scene (each pixel's median), the per-map normalisation (median and a high quantile
of each raw map, or per-pixel statistics, then the spread of each map's frame score), and the alert
threshold on the frame score, set from a false-alarm budget at the stream's frame rate.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_ad.alerting import frame_threshold, normal_spread
from edge_ad.config import Config
from edge_ad.data.footage import FootageClip, footage_clips
from edge_ad.data.preprocess import model_channels
from edge_ad.data.rate import SAME_RATE, resample
from edge_ad.data.ucsd import Clip, UCSDDataset, open_ucsd, quiet_decoders
from edge_ad.errors import UserError
from edge_ad.models.prior import code_nll
from edge_ad.models.ssim import gaussian_1d, separable_blur
from edge_ad.scoring.restoration import threshold_off_ties
from edge_ad.scoring.scorer import AnomalyPipeline, AnomalyScorer
from edge_ad.training.frames import clip_tensor, stack
from edge_ad.training.rundir import RunDir

PIXEL_SAMPLE = 2_000_000
# Frames of extra normal footage kept for calibration (20 minutes at 10 frames/s): the per-pixel statistics hold
# every frame's maps in memory. Longer footage is sampled evenly, each kept frame with its true motion channel.
MAX_FOOTAGE_FRAMES = 12_000


def validation_clips(run: RunDir, data_root: str | Path) -> list[Clip]:
    """The normal clips the run held out of training; the last Train clip (with a warning) if it held none."""
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
    return [by_name[n] for n in names]


def validation_frames(run: RunDir, cfg: Config, data_root: str | Path) -> np.ndarray:
    return stack([clip_tensor(c, cfg) for c in validation_clips(run, data_root)])


# Fewer than two frames have no spread: the per-pixel deviation would be NaN and the threshold with it.
MIN_FRAMES = 2


def _chunks(x: np.ndarray, batch: int = 32) -> Iterator[np.ndarray]:
    return (x[i : i + batch] for i in range(0, len(x), batch))


@torch.no_grad()
def _batched(x: np.ndarray, fn, batch: int = 32) -> list[Any]:
    return [fn(torch.from_numpy(b).float()) for b in _chunks(x, batch)]


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


def scene_background(x: np.ndarray, colour: int) -> np.ndarray:
    """Each pixel's median over normal frames [N, C, H, W] (frame channels): a walker passes a pixel in a few
    frames, so the median is the scene without them. Row by row, so a long footage sample is not copied whole."""
    return np.stack([np.median(x[:, :colour, r], axis=0) for r in range(x.shape[2])], axis=1).astype(np.float32)


def calibrate(
    pipeline: AnomalyPipeline,
    cfg: Config,
    val_x: np.ndarray,
    seed: int = 0,
    threshold_frames: Iterable[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Statistics on ``val_x``; the alert threshold on the frame scores of ``threshold_frames`` (batches),
    ``val_x`` itself by default: footage too long to hold is sampled for the one, streamed for the other."""
    if len(val_x) < MIN_FRAMES:
        raise UserError(
            f"calibration needs at least {MIN_FRAMES} normal frames and got {len(val_x)}: a spread cannot be "
            "measured on fewer; give longer validation clips, or more footage with `edge-ad calibrate --normal`"
        )
    scorer = pipeline.scorer
    rng = np.random.default_rng(seed)
    restore_share = None
    if pipeline.prior is not None:  # kept in every bundle, so restoration can be switched on later
        prior = pipeline.prior

        def nll_of(x: torch.Tensor) -> torch.Tensor:
            codes = pipeline.encode(x)[0]
            return code_nll(prior(codes), codes).flatten()

        nll = torch.cat(_batched(val_x, nll_of)).numpy()
        scorer.restore_threshold.fill_(threshold_off_ties(nll, cfg.scoring.restore_quantile))
        restore_share = float((nll <= float(scorer.restore_threshold)).mean())
    if "background" in scorer.names:
        scorer.background.copy_(torch.from_numpy(scene_background(val_x, scorer.colour)))
    raw = _batched(val_x, pipeline.raw_maps)
    for i, name in enumerate(scorer.names):
        mode = cfg.scoring.normalisation(name)
        c, s = map_statistics([r[name] for r in raw], mode, rng, cfg.scoring.pixel_stats_sigma)
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
    with torch.no_grad():
        batches = _chunks(val_x) if threshold_frames is None else threshold_frames
        scores = torch.cat([pipeline(torch.from_numpy(b).float())[1] for b in batches]).numpy()
    alert = frame_threshold(scores, cfg.scoring.false_alarms_per_hour, cfg.scoring.assumed_fps)
    _require_finite(scorer, scores, len(val_x))
    return {
        "maps": scorer.names,
        # what the statistics and the threshold were set for: a later edit of the run's scoring makes them stale
        "scoring": cfg.scoring.model_dump(mode="json"),
        "normalise": cfg.scoring.normalise,
        "normalise_maps": {name: cfg.scoring.normalisation(name) for name in scorer.names},
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
        # the share of calibration codes at or below it: the quantile asked for, or a little above (off ties)
        "restore_quantile_effective": restore_share,
        **alert,
        "pixel_threshold": alert["threshold"],
        "map_scale": 2.0 * max(alert["threshold"], 1e-6),
        "false_alarms_per_hour": cfg.scoring.false_alarms_per_hour,
        "assumed_fps": cfg.scoring.assumed_fps,
        "val_frames": int(len(scores)),  # the frames the threshold was set on
        "stats_frames": int(len(val_x)),
    }


def _require_finite(scorer: AnomalyScorer, scores: np.ndarray, frames: int) -> None:
    """A NaN threshold alerts never and a NaN statistic blanks every map: refuse before anything is written."""
    bad = [n for n in scorer.CALIBRATED if not bool(torch.isfinite(getattr(scorer, n)).all())]
    if not np.isfinite(scores).all():
        bad.append("frame scores")
    if bad:
        raise UserError(
            f"calibration on {frames} normal frames gave NaN or infinity in {', '.join(bad)}: the model's maps "
            "are not finite on this footage; check that it is the camera's footage, or train the run again"
        )


def save_normalisation(run: RunDir, scorer: AnomalyScorer) -> None:
    from safetensors.torch import save_file

    save_file({n: getattr(scorer, n).contiguous() for n in scorer.CALIBRATED}, str(run.normalisation))


Fingerprint = tuple[str, str, int]


def fingerprint(frames: Sequence[Path]) -> Fingerprint:
    """A frame folder's identity whatever its path: its first and last frame files' bytes and its length. A
    copy of a clip folder elsewhere, the usual way a training clip slips into recordings, holds the same files."""
    first, last = (hashlib.sha256(f.read_bytes()).hexdigest() for f in (frames[0], frames[-1]))
    return first, last, len(frames)


# What a known clip is to the run, and why calibrating on it is refused.
_REFUSED = {
    "trained": "a clip the model trained on; calibrate on normal footage it never saw",
    "validation": "one of the run's validation clips, calibrated on already; leave it out",
    "test": "a test clip (anomalies, and eval's ground truth); give normal footage",
}


def _role(clip: Clip, split: dict[str, Any]) -> str | None:
    """What a Train clip is to the run; None for one added after training (neither learnt nor held out).
    A run without a split trained on every Train clip."""
    if clip.name in split.get("val", []):
        return "validation"
    return "trained" if "train" not in split or clip.name in split["train"] else None


def _known_clips(
    run: RunDir, ds: UCSDDataset, fingerprints: bool
) -> tuple[dict[Path, str], dict[Fingerprint, tuple[str, str]]]:
    """The data's clips with their roles, by folder and (when asked: it reads two files a clip) by content."""
    split = run.read_json("split") if run.split.is_file() else {}
    roles = [(c, _role(c, split)) for c in ds.train] + [(c, "test") for c in ds.test]
    known = [(c, r) for c, r in roles if r is not None and c.frame_paths]
    by_folder = {c.frame_paths[0].parent.resolve(): r for c, r in known}
    by_content = {fingerprint(c.frame_paths): (r, c.name) for c, r in known} if fingerprints else {}
    return by_folder, by_content


def usable_footage(paths: list[Path], run: RunDir, ds: UCSDDataset, fps: float) -> list[FootageClip]:
    """Every clip the paths hold, once each. Refused: the clips the model trained on (thresholds set on
    learnt frames would be optimistic), its validation clips (already in), the data's test clips (anomalies,
    and the eval's ground truth), and copies of any of them; footage of another frame size."""
    found = [c for p in paths for c in footage_clips(p)]
    by_folder, by_content = _known_clips(run, ds, fingerprints=any(c.frames for c in found))
    camera = ds.frame_shape[:2] if ds.train else None
    clips: dict[Path, FootageClip] = {}
    for c in found:
        if c.path in by_folder:
            raise UserError(f"{c.path} is {_REFUSED[by_folder[c.path]]}")
        if c.frames and (copy_of := by_content.get(fingerprint(c.frames))):
            raise UserError(f"{c.path} is a copy of {copy_of[1]}, {_REFUSED[copy_of[0]]}")
        if camera is not None and (c.height, c.width) != camera:
            raise UserError(
                f"{c.path} has {c.width}x{c.height} frames but the run's camera gives {camera[1]}x{camera[0]}; "
                "calibrate on footage of the camera the model was trained for"
            )
        if c.fps and c.fps < fps / SAME_RATE:  # faster footage is resampled to the model's rate (rate.py)
            print(f"warning: {c.path} runs at {c.fps:g} frames/s, below the model's {fps:g}: its motion differs")
        elif c.kind == "video" and not c.fps:
            print(f"warning: {c.path} does not say its frame rate; every frame is read, as if at {fps:g} frames/s")
        clips.setdefault(c.path, c)
    return list(clips.values())


def _stream(clip: FootageClip, cfg: Config, record: dict[str, Any]) -> Iterator[np.ndarray]:
    """A clip's model inputs, streamed; counts what was read and skipped into ``record``."""
    d = cfg.data
    frames = clip.open()
    kept = resample(frames, cfg.scoring.assumed_fps, clip.fps)
    with quiet_decoders():
        for ch in model_channels((p.image for p in kept), d.size, d.grayscale, d.temporal_offsets):
            record["frames"] += 1
            yield ch
    record["skipped"] = frames.skipped
    if record["frames"] == 0:
        raise UserError(f"no frame of {clip.path} could be read; check the file, or leave it out")


def sample_footage(
    clips: list[FootageClip], cfg: Config, budget: int = MAX_FOOTAGE_FRAMES
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Every stride-th frame of the footage, for the per-pixel statistics, and what was read of each clip.
    The stride comes from the clips' own lengths, and doubles (every other kept frame dropped) whenever more
    than twice ``budget`` frames are kept: a container's frame count can be wrong or missing."""
    at_rate = (c.length * min(1.0, cfg.scoring.assumed_fps / c.fps) if c.fps else c.length for c in clips)
    stride = max(1, math.ceil(sum(at_rate) / budget))  # frames as read: faster footage is resampled first
    kept: list[tuple[int, np.ndarray]] = []
    records: list[dict[str, Any]] = []
    index = 0
    for i, clip in enumerate(clips):
        records.append({"path": str(clip.path), "fps": clip.fps, "frames": 0, "skipped": 0})
        for ch in _stream(clip, cfg, records[-1]):
            if index % stride == 0:
                kept.append((i, ch.astype(np.float16)))
                if len(kept) > 2 * budget:
                    kept, stride = kept[::2], 2 * stride
            index += 1
    for i, r in enumerate(records):
        r["sampled"] = sum(1 for j, _ in kept if j == i)
    return np.stack([ch for _, ch in kept]), records


def footage_batches(clips: list[FootageClip], cfg: Config, batch: int = 32) -> Iterator[np.ndarray]:
    """All of the footage, in batches: the alert threshold is set on every frame, not on the sample."""
    for clip in clips:
        record = {"frames": 0}
        channels = _stream(clip, cfg, record)
        while chunk := list(itertools.islice(channels, batch)):
            yield np.stack(chunk)


def calibrate_run(
    run_dir: str | Path, data_root: str | Path, normal: list[Path] | None = None, budget: int = MAX_FOOTAGE_FRAMES
) -> dict[str, Any]:
    """``normal``: more normal footage of the camera (video files, frame folders, folders of either). Its
    sample joins the validation clips for the map statistics; all of it joins them for the alert threshold."""
    from edge_ad.scoring.load import load_pipeline

    run = RunDir(Path(run_dir))
    cfg, pipeline, _ = load_pipeline(run.root, calibrated=False)
    val_clips = validation_clips(run, data_root)
    val_x = stack([clip_tensor(c, cfg) for c in val_clips])
    if not normal:
        calib = calibrate(pipeline, cfg, val_x, cfg.training.seed)
        calib["normal_footage"] = []
    else:
        clips = usable_footage(list(normal), run, open_ucsd(data_root), cfg.scoring.assumed_fps)
        sample, records = sample_footage(clips, cfg, budget)
        whole = len(sample) == sum(r["frames"] for r in records)  # nothing sampled away: no second reading
        stats_x = np.concatenate([val_x, sample])
        del sample
        scored = None if whole else itertools.chain(_chunks(val_x), footage_batches(clips, cfg))
        calib = calibrate(pipeline, cfg, stats_x, cfg.training.seed, scored)
        calib["normal_footage"] = records
    calib["val_clips"] = [c.name for c in val_clips]  # eval calibrates the baselines on the same clips
    save_normalisation(run, pipeline.scorer)
    run.write_json("calibration", calib)
    return calib
