"""ROC-based scores: frame AUROC and EER, and pooled pixel AUROC that never needs every pixel in memory.

A Ped1-sized test set at 128x128 has ~120M pixels; sorting them all costs gigabytes. Pixel AUROC is the
probability that an anomalous pixel outscores a normal one, so it depends only on the two class-conditional
score distributions: a uniform sample of each class estimates it without bias, and a few million samples
put the standard error near 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import auc, roc_auc_score, roc_curve

from edge_ad.metrics.sampling import UniformSample

DEFAULT_CURVE_POINTS = 400


@dataclass(frozen=True)
class Curve:
    """A ROC-like curve, thinned for plots and JSON; ``x`` and ``y`` rise together."""

    x: np.ndarray
    y: np.ndarray

    def to_dict(self, digits: int = 6) -> dict[str, list[float]]:
        return {"x": np.round(self.x, digits).tolist(), "y": np.round(self.y, digits).tolist()}


def _check_binary(labels: np.ndarray) -> None:
    """Both classes are needed; the caller turns this into a message about its own data."""
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        kind = "anomalous" if positives == 0 else "normal"
        raise ValueError(f"no {kind} samples: AUROC and EER need both normal and anomalous samples")


def _as_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    _check_binary(y)
    return s, y


def frame_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    s, y = _as_scores_labels(scores, labels)
    return float(roc_auc_score(y, s))


def eer_from_curve(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where false positives equal misses, interpolated between the two ROC points around it."""
    gap = fpr - (1.0 - tpr)  # rises from -1 at (0, 0) to +1 at (1, 1)
    i = int(np.argmax(gap >= 0.0))
    if i == 0:
        return float(fpr[0])
    g0, g1 = gap[i - 1], gap[i]
    alpha = 0.0 if g1 == g0 else -g0 / (g1 - g0)
    return float(fpr[i - 1] + alpha * (fpr[i] - fpr[i - 1]))


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate: 0 for a perfect ranking, 0.5 for chance, 1 for a reversed ranking."""
    s, y = _as_scores_labels(scores, labels)
    fpr, tpr, _ = roc_curve(y, s)
    return eer_from_curve(fpr, tpr)


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = DEFAULT_CURVE_POINTS) -> Curve:
    """Keep evenly spaced points of a long curve, always with both ends, so plots and JSON stay small."""
    if x.size > max_points:
        idx = np.unique(np.linspace(0, x.size - 1, max_points).round().astype(np.int64))
        x, y = x[idx], y[idx]
    return Curve(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def roc_points(scores: np.ndarray, labels: np.ndarray, max_points: int = DEFAULT_CURVE_POINTS) -> Curve:
    s, y = _as_scores_labels(scores, labels)
    fpr, tpr, _ = roc_curve(y, s)
    return thin_curve(fpr, tpr, max_points)


@dataclass(frozen=True)
class PixelAUROCResult:
    """Pooled pixel AUROC; ``sampled`` says whether it was estimated from a subsample of ``n_used`` pixels."""

    auroc: float
    n_pixels: int
    n_anomalous: int
    n_used: int
    sampled: bool
    curve: Curve | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "auroc": self.auroc,
            "n_pixels": self.n_pixels,
            "n_anomalous": self.n_anomalous,
            "n_used": self.n_used,
            "sampled": self.sampled,
        }


def _flat_pixels(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(maps)
    g = np.asarray(masks)
    if m.shape != g.shape:
        raise ValueError(f"maps {m.shape} and masks {g.shape} differ in shape")
    return m.reshape(-1), g.reshape(-1).astype(bool)


def pixel_auroc(
    maps: np.ndarray,
    masks: np.ndarray,
    max_pixels: int | None = 20_000_000,
    seed: int = 0,
    curve_points: int = DEFAULT_CURVE_POINTS,
) -> PixelAUROCResult:
    """Pooled pixel AUROC of maps [N,H,W] against masks [N,H,W]; above ``max_pixels`` every pixel is kept
    with the same probability (seeded), so the estimate is unbiased and the result says it was sampled."""
    values, labels = _flat_pixels(maps, masks)
    n = values.size
    sampled = max_pixels is not None and n > max_pixels
    if sampled:
        rate = max_pixels / n
        rng = np.random.default_rng(seed)
        chunk = 1 << 22
        keep = np.concatenate([rng.random(min(chunk, n - i), dtype=np.float32) < rate for i in range(0, n, chunk)])
        v, y = values[keep], labels[keep]
    else:
        v, y = values, labels
    v = v.astype(np.float64)
    _check_binary(y)
    fpr, tpr, _ = roc_curve(y, v)
    return PixelAUROCResult(
        auroc=float(auc(fpr, tpr)),
        n_pixels=n,
        n_anomalous=int(labels.sum()),
        n_used=int(v.size),
        sampled=bool(sampled),
        curve=thin_curve(fpr, tpr, curve_points),
    )


class PixelAUROC:
    """Streaming pooled pixel AUROC from a uniform sample of at most ``max_pixels`` pixels of each class, so
    evaluation never holds the maps. Per-class samples are unbiased for AUROC (it ignores the class ratio)
    and keep the rare anomalous pixels from being drowned out. Memory: about 12 bytes per kept pixel."""

    def __init__(self, max_pixels: int = 2_000_000, seed: int = 0) -> None:
        if max_pixels < 1:
            raise ValueError("max_pixels must be at least 1")
        rng = np.random.default_rng(seed)
        self._normal = UniformSample(max_pixels, rng)
        self._anomalous = UniformSample(max_pixels, rng)

    @property
    def n_pixels(self) -> int:
        return self._normal.seen + self._anomalous.seen

    @property
    def n_anomalous(self) -> int:
        return self._anomalous.seen

    def update(self, maps: np.ndarray, masks: np.ndarray) -> None:
        values, labels = _flat_pixels(maps, masks)
        self._anomalous.add(values[labels])
        self._normal.add(values[~labels])

    def compute(self, curve_points: int = DEFAULT_CURVE_POINTS) -> PixelAUROCResult:
        """Raises ValueError when either class has no pixel yet."""
        pos, neg = self._anomalous.sample(), self._normal.sample()
        v = np.concatenate([pos, neg]).astype(np.float64)
        y = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
        _check_binary(y)
        fpr, tpr, _ = roc_curve(y, v)
        return PixelAUROCResult(
            auroc=float(auc(fpr, tpr)),
            n_pixels=self.n_pixels,
            n_anomalous=self.n_anomalous,
            n_used=int(v.size),
            sampled=v.size < self.n_pixels,
            curve=thin_curve(fpr, tpr, curve_points),
        )
