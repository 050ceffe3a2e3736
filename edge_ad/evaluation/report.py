"""Evaluate methods clip by clip and write the report: report.json, report.md and PNG figures.

The ``Evaluator`` runs every method on each clip as it arrives and folds the maps into streaming metric
accumulators, so a full test set is evaluated without keeping its maps: what stays is one score per frame
and method, bounded pixel samples, fixed-size histograms, and a few example frames for the figure.
Frame scores are pooled over clips as they are (no per-clip normalisation, which needs the future of a
clip and no camera has).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from edge_ad.config import AlertConfig
from edge_ad.data.preprocess import to_model_frame
from edge_ad.errors import UserError, make_dir
from edge_ad.evaluation.alert_timing import AlertSummary, summarise_alerts
from edge_ad.evaluation.figures import Example, plot_examples, plot_roc
from edge_ad.evaluation.methods import MapMethod, resize_maps
from edge_ad.metrics import (
    AUPRO,
    Curve,
    Ped1Accumulator,
    PixelAUROC,
    ScoreSummary,
    eer,
    frame_auroc,
    roc_points,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ClipInfo:
    name: str
    frames: int
    anomalous: int
    has_masks: bool
    kinds: tuple[str, ...] = ()  # the anomaly kinds its labels name (``edge_ad.data.mfile.GtEntry``)
    # frames (1-based, as labels count them) whose files did not decode and were scored as a neighbour
    stand_in_frames: tuple[int, ...] = ()


@dataclass
class MethodRecord:
    """What one method leaves behind: its frame scores per clip, time spent, and pixel-metric accumulators."""

    name: str
    pixel: PixelAUROC
    pro: AUPRO
    ped1: Ped1Accumulator
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class MethodScores:
    summary: ScoreSummary
    frame_curve: Curve | None
    pixel_curve: Curve | None
    pro_curve: Curve | None
    ped1_curve: Curve | None


@dataclass
class EvalResults:
    """Everything the report needs. ``scored`` computes the metrics once, on first use."""

    eval_size: tuple[int, int]
    max_pixels: int
    fpr_limit: float
    clips: list[ClipInfo]
    labels: dict[str, np.ndarray]
    methods: dict[str, MethodRecord]
    examples: list[Example]
    skipped: list[str]
    # the alert rule replayed at each method's alert threshold (methods that have one)
    alerts: dict[str, AlertSummary] = field(default_factory=dict)

    @property
    def has_masks(self) -> bool:
        return any(c.has_masks for c in self.clips)

    @cached_property
    def scored(self) -> dict[str, MethodScores]:
        return {name: _score_method(self, rec) for name, rec in self.methods.items()}

    def summaries(self) -> dict[str, ScoreSummary]:
        return {name: s.summary for name, s in self.scored.items()}

    @cached_property
    def by_kind(self) -> list[KindScores]:
        return score_kinds(self)


@dataclass(frozen=True)
class KindScores:
    """Frame AUROC of one anomaly kind: the anomalous frames of the clips that name this kind alone (once or
    more), against every normal frame of the test set. A clip with two kinds is left out of both, since its
    labels do not say which frames hold which."""

    kind: str
    clips: int
    anomalous_frames: int
    frame_auroc: dict[str, float | None]


def score_kinds(res: EvalResults) -> list[KindScores]:
    """One row per kind that some clip names alone, in first-seen order; none when no clip names a kind."""
    alone: dict[str, list[str]] = {}
    for c in res.clips:
        if len(set(c.kinds)) == 1:  # "vehicle, vehicle" is a vehicle clip
            alone.setdefault(c.kinds[0], []).append(c.name)
    if not alone:
        return []
    names = [c.name for c in res.clips]
    normal = np.concatenate([~res.labels[n] for n in names])
    out = []
    for kind, clips in alone.items():
        mine = np.concatenate([res.labels[n] if n in clips else np.zeros_like(res.labels[n]) for n in names])
        keep = mine | normal
        aurocs: dict[str, float | None] = {}
        for method, rec in res.methods.items():
            scores = np.concatenate([rec.scores[n] for n in names])
            aurocs[method] = _attempt(partial(frame_auroc, scores[keep], mine[keep]), kind, [])
        out.append(KindScores(kind, len(clips), int(mine.sum()), aurocs))
    return out


def _attempt(compute: Callable[[], T], what: str, notes: list[str]) -> T | None:
    """A metric the test set cannot give (one class missing) becomes None plus a note saying why."""
    try:
        return compute()
    except ValueError as e:
        notes.append(f"{what}: {e}")
        return None


def _score_method(res: EvalResults, rec: MethodRecord) -> MethodScores:
    notes: list[str] = []
    names = [c.name for c in res.clips]
    scores = np.concatenate([rec.scores[n] for n in names]) if names else np.empty(0)
    labels = np.concatenate([res.labels[n] for n in names]) if names else np.empty(0, bool)
    auroc = _attempt(lambda: frame_auroc(scores, labels), "frame AUROC", notes)
    frame_eer = _attempt(lambda: eer(scores, labels), "frame EER", notes)
    frame_curve = _attempt(lambda: roc_points(scores, labels), "frame ROC", []) if auroc is not None else None
    pixel = pro = ped1 = None
    if res.has_masks:
        pixel = _attempt(rec.pixel.compute, "pixel AUROC", notes)
        pro = _attempt(rec.pro.compute, "AUPRO", notes)
        ped1 = _attempt(rec.ped1.compute, "Ped1 pixel criterion", notes)
        if ped1 is not None and ped1.n_skipped:
            notes.append(f"Ped1 pixel criterion: {ped1.n_skipped} frames skipped (frame label and mask disagree)")
    else:
        notes.append("pixel scores: no clip has ground-truth masks")
    summary = ScoreSummary(
        method=rec.name,
        frames=int(labels.size),
        clips=len(names),
        anomalous_frames=int(labels.sum()),
        seconds=rec.seconds,
        frame_auroc=auroc,
        frame_eer=frame_eer,
        pixel_auroc=pixel.auroc if pixel else None,
        pixel_auroc_sampled=pixel.sampled if pixel else False,
        pixel_count=rec.pixel.n_pixels,
        pixel_used=pixel.n_used if pixel else 0,
        aupro=pro.aupro if pro else None,
        aupro_fpr_limit=res.fpr_limit,
        ped1_eer=ped1.eer if ped1 else None,
        ped1_auc=ped1.auc if ped1 else None,
        ped1_anomalous_frames=ped1.n_anomalous if ped1 else 0,
        ped1_normal_frames=ped1.n_normal if ped1 else 0,
        notes=tuple(notes),
    )
    return MethodScores(
        summary=summary,
        frame_curve=frame_curve,
        pixel_curve=pixel.curve if pixel else None,
        pro_curve=pro.curve if pro else None,
        ped1_curve=ped1.curve if ped1 else None,
    )


class _Pool:
    """Seeded reservoir of example slots, so the figure shows frames spread over the whole test set."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.rng = rng
        self.seen = 0
        self.items: list[tuple[int, Example]] = []

    def offer(self, order: int, example: Example) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append((order, example))
        elif (j := int(self.rng.integers(self.seen))) < self.capacity:
            self.items[j] = (order, example)

    def examples(self) -> list[Example]:
        return [ex for _, ex in sorted(self.items, key=lambda item: item[0])]


def _eval_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.round(to_model_frame(frame, size, grayscale=True)[0] * 255.0).astype(np.uint8)


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if masks.shape[1:] == (h, w):
        return masks
    return np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]) > 0


class Evaluator:
    """Drive it with ``add_clip`` per test clip, then ``results()``; see the module docstring."""

    def __init__(
        self,
        methods: Sequence[MapMethod],
        eval_size: tuple[int, int] = (128, 128),
        max_pixels: int = 2_000_000,
        n_examples: int = 6,
        fpr_limit: float = 0.3,
        num_thresholds: int = 1000,
        seed: int = 0,
        alerts: AlertConfig | None = None,
        fps: float = 10.0,
    ) -> None:
        """``alerts``, ``fps``: the alert rule and frame rate replayed on the frame scores of every method with
        an ``alert_threshold``."""
        names = [m.name for m in methods]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"need at least one method and distinct method names, got {names}")
        self.methods = list(methods)
        self.eval_size = (int(eval_size[0]), int(eval_size[1]))
        self.max_pixels = max_pixels
        self.fpr_limit = fpr_limit
        self.n_examples = n_examples
        self.alert_cfg, self.fps = alerts, fps
        self._records = {
            m.name: MethodRecord(
                name=m.name,
                pixel=PixelAUROC(max_pixels, seed=seed),
                pro=AUPRO(fpr_limit, num_thresholds, seed=seed),
                ped1=Ped1Accumulator(),
            )
            for m in self.methods
        }
        self._clips: list[ClipInfo] = []
        self._labels: dict[str, np.ndarray] = {}
        self._skipped: list[str] = []
        rng = np.random.default_rng(seed)
        n_anomalous = math.ceil(n_examples / 2)
        self._pools = {
            "masked": _Pool(n_anomalous, rng),
            "anomalous": _Pool(n_anomalous, rng),
            "normal": _Pool(n_examples, rng),
        }

    def _check(
        self, name: str, frames: np.ndarray, labels: np.ndarray | None, masks: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        if frames.ndim not in (3, 4) or frames.shape[0] == 0:
            raise UserError(f"clip {name}: expected frames [T,H,W] or [T,H,W,C], got shape {frames.shape}")
        if name in self._labels:
            raise UserError(f"clip {name} was added twice; clip names must be unique")
        if labels is None or np.asarray(labels).size == 0:
            return None, None
        labels = np.asarray(labels).astype(bool).ravel()
        t = frames.shape[0]
        if labels.size != t:
            raise UserError(f"clip {name}: {labels.size} frame labels for {t} frames; fix its label file")
        if masks is not None:
            masks = np.asarray(masks)
            if masks.ndim == 4 and masks.shape[3] == 1:
                masks = masks[..., 0]
            if masks.shape != frames.shape[:3]:
                raise UserError(
                    f"clip {name}: masks are {'x'.join(map(str, masks.shape))} but frames are "
                    f"{'x'.join(map(str, frames.shape[:3]))} (T x H x W); masks must match the frames"
                )
            masks = masks > 0
        return labels, masks

    def _offer_examples(
        self, name: str, frames: np.ndarray, labels: np.ndarray, masks: np.ndarray | None
    ) -> list[Example]:
        """One anomalous (largest mask, else middle anomalous frame) and one normal candidate per clip."""
        order = len(self._clips)
        offered = []
        anomalous = np.flatnonzero(labels)
        normal = np.flatnonzero(~labels)
        if anomalous.size:
            if masks is not None and masks[anomalous].any():
                i, pool = int(anomalous[np.argmax(masks[anomalous].sum(axis=(1, 2)))]), "masked"
            else:
                i, pool = int(anomalous[anomalous.size // 2]), "anomalous"
            offered.append((pool, i))
        if normal.size:
            offered.append(("normal", int(normal[normal.size // 2])))
        examples = []
        for pool, i in offered:
            ex = Example(name, i, bool(labels[i]), _eval_frame(frames[i], self.eval_size), None, {})
            if masks is not None:
                ex.mask = masks[i]
            self._pools[pool].offer(order, ex)
            examples.append(ex)
        return examples

    def add_clip(
        self,
        name: str,
        frames: np.ndarray,
        labels: np.ndarray | None,
        masks: np.ndarray | None = None,
        kinds: Sequence[str] = (),
        stand_ins: Sequence[int] = (),
    ) -> bool:
        """Run every method on one clip; False when the clip has no labels and was skipped. ``kinds``: the
        anomaly kinds the clip's labels name, for the scores by kind; ``stand_ins``: the frames (0-based)
        the reader replaced by a neighbour because their files were damaged, which the report names."""
        frames = np.asarray(frames)
        labels, masks = self._check(name, frames, labels, masks)
        if labels is None:
            log.warning("clip %s has no frame labels; skipped", name)
            self._skipped.append(name)
            return False
        masks = None if masks is None else resize_masks(masks, self.eval_size)
        examples = self._offer_examples(name, frames, labels, masks)
        for method in self.methods:
            self._run(method, name, frames, labels, masks, examples)
        stand_in_frames = tuple(int(i) + 1 for i in stand_ins)
        self._clips.append(
            ClipInfo(name, int(labels.size), int(labels.sum()), masks is not None, tuple(kinds), stand_in_frames)
        )
        self._labels[name] = labels
        return True

    def _run(
        self,
        method: MapMethod,
        clip: str,
        frames: np.ndarray,
        labels: np.ndarray,
        masks: np.ndarray | None,
        examples: list[Example],
    ) -> None:
        rec = self._records[method.name]
        method.reset()
        start = time.perf_counter()
        maps, scores = method.score_clip(frames)
        rec.seconds += time.perf_counter() - start
        t = frames.shape[0]
        maps, scores = np.asarray(maps), np.asarray(scores, dtype=np.float64).ravel()
        if maps.ndim != 3 or maps.shape[0] != t or scores.size != t:
            raise ValueError(f"{method.name} returned maps {maps.shape} and {scores.size} scores for {t} frames")
        maps = resize_maps(maps, self.eval_size)
        rec.scores[clip] = scores
        if masks is not None:
            rec.pixel.update(maps, masks)
            rec.pro.update(maps, masks)
            rec.ped1.update(maps, masks, labels)
        for ex in examples:
            ex.maps[method.name] = maps[ex.index].copy()

    def _examples(self) -> list[Example]:
        n_anomalous = math.ceil(self.n_examples / 2)
        anomalous = (self._pools["masked"].examples() + self._pools["anomalous"].examples())[:n_anomalous]
        normal = self._pools["normal"].examples()[: self.n_examples - len(anomalous)]
        return anomalous + normal

    def _alerts(self) -> dict[str, AlertSummary]:
        if self.alert_cfg is None or not self._clips:
            return {}
        out = {}
        for m in self.methods:
            threshold = getattr(m, "alert_threshold", None)
            if threshold is not None:
                scores = self._records[m.name].scores
                out[m.name] = summarise_alerts(scores, self._labels, threshold, self.alert_cfg, self.fps)
        return out

    def results(self) -> EvalResults:
        return EvalResults(
            eval_size=self.eval_size,
            max_pixels=self.max_pixels,
            fpr_limit=self.fpr_limit,
            clips=list(self._clips),
            labels=dict(self._labels),
            methods=dict(self._records),
            examples=self._examples(),
            skipped=list(self._skipped),
            alerts=self._alerts(),
        )


COLUMNS = (
    "method",
    "frame AUROC",
    "frame EER",
    "pixel AUROC",
    "AUPRO@30%",
    "Ped1 pixel EER",
    "Ped1 pixel AUC",
    "frames",
    "clips",
    "anomalous frames",
    "seconds",
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table_rows(results: EvalResults) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by report.md and the terminal; scores in percent, one decimal."""
    header = list(COLUMNS)
    header[4] = f"AUPRO@{100 * results.fpr_limit:g}%"
    rows = []
    for s in results.summaries().values():
        pixel = _pct(s.pixel_auroc) + ("*" if s.pixel_auroc_sampled else "")
        rows.append(
            [
                s.method,
                _pct(s.frame_auroc),
                _pct(s.frame_eer),
                pixel,
                _pct(s.aupro),
                _pct(s.ped1_eer),
                _pct(s.ped1_auc),
                str(s.frames),
                str(s.clips),
                str(s.anomalous_frames),
                f"{s.seconds:.2f}",
            ]
        )
    return header, rows


ALERT_COLUMNS = (
    "method",
    "threshold",
    "anomalies alerted",
    "median delay",
    "max delay",
    "early",
    "false",
    "normal min",
    "false+early /h",
)


def alert_rows(results: EvalResults) -> list[list[str]]:
    """One row per method with an alert threshold; delays in frames."""
    rows = []
    for name, a in results.alerts.items():
        median = "-" if a.median_delay is None else f"{a.median_delay:g}"
        rows.append(
            [
                name,
                f"{a.threshold:.4g}",
                f"{a.alerted}/{a.anomalies}",
                median,
                "-" if a.max_delay is None else str(a.max_delay),
                str(a.early),
                str(a.false),
                f"{a.normal_minutes:.1f}",
                "-" if a.false_per_hour is None else f"{a.false_per_hour:.0f}",
            ]
        )
    return rows


def kind_rows(results: EvalResults) -> tuple[list[str], list[list[str]]]:
    """Frame AUROC by anomaly kind: one row per kind, one column per method."""
    header = ["kind", "clips", "anomalous frames", *results.methods]
    rows = [
        [k.kind, str(k.clips), str(k.anomalous_frames), *(_pct(k.frame_auroc[m]) for m in results.methods)]
        for k in results.by_kind
    ]
    return header, rows


KIND_CAPTION = "frame AUROC by anomaly kind (clips that name one kind, against every normal frame)"


def format_table(results: EvalResults) -> str:
    """Plain aligned text for the terminal: names left, numbers right (the metrics, the alerts, the kinds)."""
    out = _aligned(*table_rows(results))
    if any(s.pixel_auroc_sampled for s in results.summaries().values()):
        out.append("* pixel AUROC estimated from a uniform sample of each class")
    if results.alerts:
        out += ["", "alerts at each method's threshold (delays in frames):"]
        out += _aligned(list(ALERT_COLUMNS), alert_rows(results))
    if results.by_kind:
        out += ["", f"{KIND_CAPTION}:", *_aligned(*kind_rows(results))]
    return "\n".join(out)


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) for c, w in zip(cells, widths, strict=True)]
        padded[0] = cells[0].ljust(widths[0])
        return "  ".join(padded)

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: names left, numbers right."""
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _markdown(results: EvalResults, figures: list[str]) -> str:
    header, rows = table_rows(results)
    masked = sum(c.has_masks for c in results.clips)
    h, w = results.eval_size
    lines = [
        "# edge-ad evaluation",
        "",
        f"{len(results.clips)} test clips ({masked} with pixel masks), maps compared at {h}x{w}. "
        "Scores in percent; EERs: lower is better. Frame scores are pooled over clips without per-clip "
        f"normalisation. AUPRO is integrated up to {100 * results.fpr_limit:g}% FPR and normalised. The Ped1 "
        "pixel criterion counts an anomalous frame as detected when at least 40% of its mask is above the "
        "threshold, and a normal frame as a false alarm when any pixel is.",
        "",
        *_md_table(header, rows),
        "",
    ]
    if any(s.pixel_auroc_sampled for s in results.summaries().values()):
        lines += [
            f"\\* pixel AUROC estimated from a uniform sample of at most {results.max_pixels} pixels per class.",
            "",
        ]
    if results.alerts:
        lines += [
            "## Alerts",
            "",
            "The alert rule of `edge-ad run` replayed on each clip's frame scores at the method's threshold (ours "
            "from calibration on normal validation clips, a baseline's set the same way on the same footage). "
            "An anomaly (a run of anomalous frames) is alerted when an alert is on during it; its delay "
            "counts frames from its first frame. An alert that starts on a normal frame is early when it lasts "
            "into an anomaly, false otherwise; normal min is the normal footage they were raised on, and false+early "
            "/h the rate they make (compare it with the false-alarm budget; a few minutes of footage give a rough "
            "rate).",
            "",
            *_md_table(list(ALERT_COLUMNS), alert_rows(results)),
            "",
        ]
    if results.by_kind:
        lines += [
            "## By anomaly kind",
            "",
            f"The {KIND_CAPTION}, from the kinds the label file's comments name. It says which kinds of "
            "anomaly a method misses; a clip naming two kinds is left out, since its labels do not say "
            "which frames hold which.",
            "",
            *_md_table(*kind_rows(results)),
            "",
        ]
    notes = [f"- {s.method}: {n}" for s in results.summaries().values() for n in s.notes]
    if results.skipped:
        notes.append(f"- skipped clips without frame labels: {', '.join(results.skipped)}")
    for c in results.clips:
        if c.stand_in_frames:
            frames = ", ".join(map(str, c.stand_in_frames))
            notes.append(
                f"- {c.name}: frame(s) {frames} did not decode (damaged files); each was scored as the frame "
                "before it (at the clip's start, the first that decodes), and its label kept"
            )
    if notes:
        lines += ["## Notes", "", *notes, ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _curves(results: EvalResults, kind: str) -> dict[str, Curve]:
    return {n: c for n, s in results.scored.items() if (c := getattr(s, f"{kind}_curve")) is not None}


def _json(results: EvalResults) -> dict[str, object]:
    return {
        "settings": {
            "eval_size": list(results.eval_size),
            "max_pixels": results.max_pixels,
            "fpr_limit": results.fpr_limit,
        },
        "methods": {n: s.to_dict() for n, s in results.summaries().items()},
        "clips": [asdict(c) for c in results.clips],
        "skipped": results.skipped,
        "curves": {
            kind: {n: c.to_dict() for n, c in _curves(results, kind).items()}
            for kind in ("frame", "pixel", "pro", "ped1")
        },
        "labels": {n: v.astype(int).tolist() for n, v in results.labels.items()},
        "frame_scores": {n: {c: v.tolist() for c, v in r.scores.items()} for n, r in results.methods.items()},
        "alerts": {n: a.to_dict() for n, a in results.alerts.items()},
        "by_kind": [asdict(k) for k in results.by_kind],
    }


def write_report(out_dir: Path, results: EvalResults) -> None:
    """report.json (every number), report.md (the table, notes, figures), roc_frame.png, roc_pixel.png when
    masks exist, and examples.png."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"report folder {out_dir} is a file; choose another --out")
    make_dir(out_dir, "report folder")
    summaries = results.summaries()
    figures = []
    frame_curves = _curves(results, "frame")
    if frame_curves:
        areas = {n: summaries[n].frame_auroc for n in frame_curves}
        plot_roc(frame_curves, areas, out_dir / "roc_frame.png", "frame-level ROC")
        figures.append("roc_frame.png")
    pixel_curves = _curves(results, "pixel")
    if pixel_curves:
        areas = {n: summaries[n].pixel_auroc for n in pixel_curves}
        plot_roc(pixel_curves, areas, out_dir / "roc_pixel.png", "pixel-level ROC (pooled pixels)")
        figures.append("roc_pixel.png")
    if results.examples:
        plot_examples(results.examples, list(results.methods), out_dir / "examples.png")
        figures.append("examples.png")
    (out_dir / "report.json").write_text(json.dumps(_json(results), indent=1) + "\n")
    (out_dir / "report.md").write_text(_markdown(results, figures))
