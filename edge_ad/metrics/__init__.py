"""Anomaly detection scores, numpy and scikit-learn only: frame AUROC/EER, pixel AUROC, AUPRO, Ped1 criterion.

Maps are float [N,H,W], masks bool [N,H,W], frame scores [N], frame labels bool [N]. Each pixel metric has a
streaming accumulator (``update`` per clip, ``compute`` at the end) so an evaluation never holds all maps.
"""

from edge_ad.metrics.ped1 import (
    COVERAGE,
    Ped1Accumulator,
    Ped1Point,
    Ped1ROC,
    ped1_pixel_criterion,
    ped1_pixel_roc,
)
from edge_ad.metrics.pro import AUPRO, AUPROResult, aupro
from edge_ad.metrics.roc import (
    Curve,
    PixelAUROC,
    PixelAUROCResult,
    eer,
    eer_from_curve,
    frame_auroc,
    pixel_auroc,
    roc_points,
)
from edge_ad.metrics.summary import ScoreSummary

__all__ = [
    "AUPRO",
    "AUPROResult",
    "COVERAGE",
    "Curve",
    "Ped1Accumulator",
    "Ped1Point",
    "Ped1ROC",
    "PixelAUROC",
    "PixelAUROCResult",
    "ScoreSummary",
    "aupro",
    "eer",
    "eer_from_curve",
    "frame_auroc",
    "pixel_auroc",
    "ped1_pixel_criterion",
    "ped1_pixel_roc",
    "roc_points",
]
