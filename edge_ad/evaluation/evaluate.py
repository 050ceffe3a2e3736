"""``edge-ad eval``: every test clip through our model and the baselines, then the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_ad.config import AlertConfig, ScoringConfig
from edge_ad.data.footage import footage_clips
from edge_ad.data.preprocess import to_model_frame
from edge_ad.data.ucsd import Clip, open_ucsd, quiet_decoders
from edge_ad.errors import UserError
from edge_ad.evaluation.baselines import MOG2, FrameDifference, PixelBaseline
from edge_ad.evaluation.methods import FrameScoreRule, MapMethod
from edge_ad.evaluation.report import EvalResults, Evaluator, format_table, write_report

WARM_UP_FRAMES = 200
MIN_NORMAL_FRAMES = 50  # fewer cannot place a baseline's alert threshold


def model_methods(
    run: str | Path | None,
    bundle: str | Path | None,
    compare: list[str] | None = None,
    data_root: str | Path | None = None,
) -> tuple[list[MapMethod], dict, dict]:
    """Our methods, what the baselines must match (the config: model size, frame-score rule, motion offset),
    and our calibration (the footage the baselines' thresholds must be set on too). ``data_root``: where
    the compared maps find the validation clips when the run's own data root has moved."""
    if (run is None) == (bundle is None):
        raise UserError("pass exactly one of --run RUN_DIR or --bundle BUNDLE")
    if bundle is not None:
        from edge_ad.evaluation.model_methods import BundleMethod

        m = BundleMethod(bundle)
        return [m], m.bundle.manifest["config"], m.bundle.calibration
    from edge_ad.evaluation.model_methods import RunMaps

    maps = RunMaps(run, compare, data_root)
    return list(maps.methods()), maps.cfg.to_dict(), maps.calibration


def baseline_methods(cfg: dict, warm_up: np.ndarray | None, normal: list[np.ndarray] | None) -> list[MapMethod]:
    """Frame differencing and MOG2 with the model's frame-score rule; MOG2 learns its background from
    ``warm_up``; each is calibrated on ``normal`` (normal clips) as the model is on its validation clips:
    the frame score's areas standardised, the alert threshold set from the same false-alarm budget."""
    size = tuple(cfg["data"]["size"])
    scoring = ScoringConfig.model_validate(cfg["scoring"])
    areas = tuple(scoring.topk_areas())

    def rule() -> FrameScoreRule:
        return FrameScoreRule(scoring.frame_score, areas)

    offsets = cfg["data"]["temporal_offsets"] or [1]
    methods: list[PixelBaseline] = [FrameDifference(k=1, size=size, rule=rule())]
    if max(offsets) != 1:
        methods.append(FrameDifference(k=max(offsets), size=size, rule=rule()))
    mog = MOG2(size=size, rule=rule())
    if warm_up is not None and len(warm_up):
        mog.warm_up(warm_up)
    methods.append(mog)
    if normal is not None and len(normal):
        for m in methods:
            m.calibrate(normal, scoring.false_alarms_per_hour, scoring.assumed_fps)
    elif methods[0].rule.needs_fit:
        raise UserError("a frame score over several areas needs normal training clips for the baselines")
    return methods


def _baseline_footage(
    train: list[Clip], calibration: dict, size: tuple[int, int]
) -> tuple[np.ndarray | None, list[np.ndarray] | None]:
    """(MOG2's warm-up frames, the baselines' normal clips). A threshold above the worst normal frame rises
    with the footage it is set on, so the baselines get the footage ours was set on: the run's validation
    clips and the normal footage calibration read, while MOG2 warms up on a clip the model trained on.
    Without those clips (a calibration made before it listed them, a run with no clip held out, other data
    than the run's) the older rule, with a warning: MOG2 warms up on the last training clip, and the
    baselines are calibrated on the one before (on what follows the warm-up, with one clip)."""
    names = calibration.get("val_clips") or []
    by_name = {c.name: c for c in train}
    others = [c for c in train if c.name not in names]
    footage = _footage_frames(calibration.get("normal_footage", []), size)
    if names and others and all(n in by_name for n in names):  # else MOG2 would learn what it is calibrated on
        clips = [by_name[n].load_frames() for n in names]
        return others[-1].load_frames()[:WARM_UP_FRAMES], clips + footage
    if names:
        print("warning: the data does not hold the clips our threshold was set on; the baselines' thresholds are "
              "set on other footage, so the alert table does not compare like with like")  # fmt: skip
    warm = train[-1].load_frames()[:WARM_UP_FRAMES] if train else None
    if len(train) > 1:
        return warm, [train[-2].load_frames(), *footage]
    rest = train[-1].load_frames()[WARM_UP_FRAMES:] if train else np.zeros(0)
    if len(rest) < MIN_NORMAL_FRAMES and not footage:
        print("warning: too little normal footage to calibrate the baselines; the alert table shows ours only")
        return warm, None
    return warm, [rest, *footage] if len(rest) else footage


def _footage_frames(records: list[dict], size: tuple[int, int]) -> list[np.ndarray]:
    """The normal footage ``edge-ad calibrate --normal`` read, clip by clip, made grey and resized as the
    baselines would but kept 8-bit: 16 KB a frame at 128x128, so an hour at 10 frames/s is 0.6 GB (1.8 GB
    at 30). Footage that is gone (a bundle evaluated on another machine) is left out, with a warning."""
    clips = []
    for record in records:
        path = Path(record["path"])
        if not path.exists():
            print(f"warning: {path}, normal footage our threshold was set on, is not here; the baselines' "
                  "thresholds are set without it")  # fmt: skip
            continue
        for clip in footage_clips(path):
            with quiet_decoders():
                frames = [_small_grey(f.image, size) for f in clip.open()]
            if frames:
                clips.append(np.stack(frames))
    return clips


def _small_grey(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The baselines' view of a frame (``to_model_frame``, grey), back in 8 bits to keep an hour in memory."""
    return np.round(to_model_frame(frame, size, grayscale=True)[0] * 255.0).astype(np.uint8)


def evaluate(
    data_root: str | Path,
    out: str | Path,
    run: str | Path | None = None,
    bundle: str | Path | None = None,
    baselines: bool = True,
    max_clips: int | None = None,
    compare: list[str] | None = None,
    alerts: AlertConfig | None = None,
) -> EvalResults:
    """``alerts``: the alert rule the alert table replays, as `edge-ad run` gets it (its --config and --set;
    the defaults otherwise); a site threshold in it replaces our calibrated one, as it does live."""
    out = Path(out)
    if out.exists() and not out.is_dir():  # before the clips are scored, not after
        raise UserError(f"report folder {out} is a file; choose another --out")
    ds = open_ucsd(data_root)
    if not ds.test:
        raise UserError(f"{data_root} has no test clips: expected Test/TestNNN folders")
    if compare and run is None:
        raise UserError("--compare-maps needs --run (a bundle holds only its final map)")
    methods, cfg, calibration = model_methods(run, bundle, compare, data_root)
    alerts = alerts or AlertConfig()
    if alerts.threshold is not None:  # ours only: a map alone or a baseline has no site threshold
        for m in methods:
            if getattr(m, "alert_threshold", None) is not None:
                m.alert_threshold = alerts.threshold
    if baselines:
        size = tuple(cfg["data"]["size"])
        methods += baseline_methods(cfg, *_baseline_footage(ds.train, calibration or {}, size))
    ev = Evaluator(methods, eval_size=tuple(cfg["data"]["size"]), alerts=alerts, fps=cfg["scoring"]["assumed_fps"])
    if max_clips and max_clips > len(ds.test):
        print(f"note: --clips {max_clips}, but {data_root} has {len(ds.test)} test clips; scoring all of them")
    clips = ds.test[:max_clips] if max_clips else ds.test
    unlabeled = [c.name for c in clips if c.labels is None]
    if len(unlabeled) == len(clips):
        raise UserError(
            f"no test clip of {data_root} has ground truth (no .m file entry, no TestNNN_gt masks); nothing to score"
        )
    for clip in clips:
        if clip.labels is None:
            print(f"warning: {clip.name} has no ground truth; skipped")
            continue
        frames = clip.load_frames()
        ev.add_clip(clip.name, frames, clip.labels, clip.load_masks(), clip.kinds, clip.stand_ins)
    results = ev.results()
    write_report(Path(out), results)
    print(format_table(results))
    return results
