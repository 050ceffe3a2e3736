"""The UCSD Ped1 pixel-level criterion (Mahadevan et al., 2010), the "pixel-level EER" papers quote.

A frame with an anomaly counts as detected at threshold t when the pixels with map > t cover at least 40 %
of its ground-truth pixels; a normal frame is a false positive when any pixel is above t. Both reduce to one
number per frame: a normal frame fires iff its maximum is above t, and an anomalous frame is detected iff
the k-th largest map value inside its mask is above t, with k = ceil(0.4 * mask pixels). The whole ROC over
thresholds is then an ordinary ROC of those per-frame numbers, exact and streamable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import auc, roc_curve

from edge_ad.metrics.roc import DEFAULT_CURVE_POINTS, Curve, eer_from_curve, thin_curve

COVERAGE = 0.4


@dataclass(frozen=True)
class Ped1Point:
    threshold: float
    tpr: float
    fpr: float
    n_anomalous: int
    n_normal: int


@dataclass(frozen=True)
class Ped1ROC:
    """ROC of the 40 % criterion over all thresholds; ``n_skipped`` frames had a label and mask that disagree."""

    eer: float
    auc: float
    n_anomalous: int
    n_normal: int
    n_skipped: int
    curve: Curve | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "eer": self.eer,
            "auc": self.auc,
            "n_anomalous": self.n_anomalous,
            "n_normal": self.n_normal,
            "n_skipped": self.n_skipped,
        }


def coverage_score(values: np.ndarray, coverage: float = COVERAGE) -> float:
    """One frame's map values inside its mask -> s such that the frame is detected at t exactly when t < s."""
    n = values.size
    k = max(1, math.ceil(coverage * n - 1e-9))
    return float(np.partition(values, n - k)[n - k])


class Ped1Accumulator:
    """Keeps two floats per frame. Frames labelled anomalous with an empty mask, or labelled normal with mask
    pixels, cannot be judged by the criterion and are counted in ``n_skipped``."""

    def __init__(self, coverage: float = COVERAGE) -> None:
        self.coverage = coverage
        self._anomalous: list[float] = []
        self._normal: list[float] = []
        self.n_skipped = 0

    def update(self, maps: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> None:
        maps = np.asarray(maps)
        masks = np.asarray(masks).astype(bool)
        labels = np.asarray(labels).astype(bool).ravel()
        if maps.shape != masks.shape or maps.ndim != 3 or labels.size != maps.shape[0]:
            raise ValueError(f"maps {maps.shape}, masks {masks.shape} and {labels.size} labels do not match")
        for amap, mask, label in zip(maps, masks, labels, strict=True):
            has_mask = bool(mask.any())
            if label and has_mask:
                self._anomalous.append(coverage_score(amap[mask], self.coverage))
            elif not label and not has_mask:
                self._normal.append(float(amap.max()))
            else:
                self.n_skipped += 1

    def _scores(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._anomalous or not self._normal:
            kind = "anomalous frames with masks" if not self._anomalous else "normal frames"
            raise ValueError(f"no {kind}: the Ped1 pixel criterion needs both")
        pos, neg = np.asarray(self._anomalous), np.asarray(self._normal)
        return np.concatenate([pos, neg]), np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])

    def point(self, threshold: float) -> Ped1Point:
        scores, labels = self._scores()
        above = scores > threshold
        return Ped1Point(
            threshold=float(threshold),
            tpr=float(above[labels].mean()),
            fpr=float(above[~labels].mean()),
            n_anomalous=int(labels.sum()),
            n_normal=int((~labels).sum()),
        )

    def compute(self, curve_points: int = DEFAULT_CURVE_POINTS) -> Ped1ROC:
        scores, labels = self._scores()
        fpr, tpr, _ = roc_curve(labels, scores)
        return Ped1ROC(
            eer=eer_from_curve(fpr, tpr),
            auc=float(auc(fpr, tpr)),
            n_anomalous=int(labels.sum()),
            n_normal=int((~labels).sum()),
            n_skipped=self.n_skipped,
            curve=thin_curve(fpr, tpr, curve_points),
        )


def ped1_pixel_criterion(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray, threshold: float) -> Ped1Point:
    """TPR and FPR of the 40 % rule at one threshold, over frames [N,H,W] with masks and frame labels."""
    acc = Ped1Accumulator()
    acc.update(maps, masks, labels)
    return acc.point(threshold)


def ped1_pixel_roc(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> Ped1ROC:
    acc = Ped1Accumulator()
    acc.update(maps, masks, labels)
    return acc.compute()
