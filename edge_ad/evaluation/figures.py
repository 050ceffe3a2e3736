"""Report figures: ROC curves of all methods, and a grid of example frames with each method's map.

matplotlib is imported inside the functions and drawn on a bare ``Figure`` (Agg canvas, no pyplot), so
importing this module costs nothing and never touches a display or global backend state. Figures are
saved at fixed pixel sizes (no tight bounding box), which the tests check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_ad.metrics import Curve

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DPI = 100
ROC_INCHES = (6.0, 6.0)
CELL_INCHES = 2.0
HEAT_CMAP = "inferno"
MASK_COLOUR = "cyan"  # stands out against inferno's black-red-yellow


@dataclass
class Example:
    """One test frame at the evaluation size, with each method's map there and the mask if the clip has one."""

    clip: str
    index: int
    label: bool
    frame: np.ndarray  # uint8 [H, W]
    mask: np.ndarray | None  # bool [H, W]
    maps: dict[str, np.ndarray]  # method name -> float32 [H, W]


def roc_size_px() -> tuple[int, int]:
    return int(ROC_INCHES[0] * DPI), int(ROC_INCHES[1] * DPI)


def examples_size_px(n_examples: int, n_methods: int) -> tuple[int, int]:
    """(width, height) of examples.png: one row per example, the frame plus one column per method."""
    return int((1 + n_methods) * CELL_INCHES * DPI), int(n_examples * CELL_INCHES * DPI)


def plot_roc(
    curves: Mapping[str, Curve],
    areas: Mapping[str, float],
    path: Path,
    title: str,
    xlabel: str = "false positive rate",
    ylabel: str = "true positive rate",
) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=ROC_INCHES, dpi=DPI)
    ax = fig.add_subplot()
    for name, curve in curves.items():
        ax.plot(curve.x, curve.y, lw=1.5, label=f"{name} ({100 * areas[name]:.1f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=xlabel, ylabel=ylabel, title=title, aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="method (AUROC %)", title_fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.96, bottom=0.1, top=0.93)
    fig.savefig(path, dpi=DPI)


def _outline(ax: Axes, mask: np.ndarray | None) -> None:
    if mask is not None and mask.any():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=MASK_COLOUR, linewidths=1.0)


def plot_examples(examples: Sequence[Example], methods: Sequence[str], path: Path) -> None:
    """Each method's maps share one colour scale across the shown frames, so a normal frame looks calm next
    to an anomalous one only if the method really scores it lower."""
    from matplotlib.figure import Figure

    width, height = examples_size_px(len(examples), len(methods))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    axes = fig.subplots(len(examples), 1 + len(methods), squeeze=False)
    scale = {}
    for m in methods:
        values = np.concatenate([ex.maps[m].ravel() for ex in examples])
        lo, hi = float(values.min()), float(np.percentile(values, 99.9))
        scale[m] = (lo, hi if hi > lo else lo + 1e-6)
    for row, ex in zip(axes, examples, strict=True):
        kind = "anomalous" if ex.label else "normal"
        row[0].imshow(ex.frame, cmap="gray", vmin=0, vmax=255)
        _outline(row[0], ex.mask)
        row[0].set_title(f"{ex.clip} #{ex.index} ({kind})", fontsize=7)
        for ax, m in zip(row[1:], methods, strict=True):
            ax.imshow(ex.frame, cmap="gray", vmin=0, vmax=255)
            ax.imshow(ex.maps[m], cmap=HEAT_CMAP, alpha=0.6, vmin=scale[m][0], vmax=scale[m][1])
            _outline(ax, ex.mask)
            ax.set_title(m, fontsize=7)
        for ax in row:
            ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.04, hspace=0.2)
    fig.savefig(path, dpi=DPI)
