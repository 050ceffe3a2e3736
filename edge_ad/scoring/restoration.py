"""Latent-space restoration (Wang et al. 2020): replace codes the prior finds unlikely, then decode.

A code is replaced by the prior's most likely code when its NLL is above a threshold AND at least one code
in the bottom half of its 8-neighbourhood (right, bottom-left, bottom, bottom-right: the positions that come
after it in raster order) is unlikely too; the neighbour rule keeps isolated noisy codes untouched.

``restore_fast`` does it for every position at once from one prior pass, plus a few refinement rounds: a
handful of batched forward passes, exportable to ONNX. The exact ``restore_sequential`` walks the grid in
raster order and re-runs the prior after every change; it is the reference the fast version is measured
against, one prior pass per replaced code, far too slow for a live stream.

A refinement round is a Jacobi step: the prior re-runs on the restored grid and the *original* codes are
judged again in that context, as the reference judges each code after the changes before it. (Judging the
restored codes instead, an earlier version, finds the replacements likely and drifted away from the
reference as rounds were added: README, Results.) The rounds need not converge, nor meet the reference:
the bottom-half neighbours are judged in the context of the whole restored grid, where the reference still
sees the code itself unchanged, so a replacement can make its right neighbour likely and undo its own
reason (codes [0 0 0 1 0] under a prior that expects each code to repeat the one before it: the reference
and even rounds give [0 0 0 0 0], odd rounds [0 0 0 1 0]).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edge_ad.models.prior import PixelSNAIL, code_nll

# No calibration code's NLL lies closer than this to the restoration threshold (nats) where the window below
# allows. ONNX Runtime's and PyTorch's NLLs of one code differed by at most 1.3e-5 on the tests' tiny run
# (in a refinement round; 7e-6 in the first pass), twenty times less.
THRESHOLD_MARGIN = 3e-4
# How far above the quantile asked for the threshold may move, as a share of the calibration codes: in the
# dense bulk of the NLLs a gap of two margins may not exist, and the larger the footage the fewer there are.
THRESHOLD_WINDOW = 0.005


def threshold_off_ties(
    nll: np.ndarray, quantile: float, margin: float = THRESHOLD_MARGIN, window: float = THRESHOLD_WINDOW
) -> float:
    """The ``quantile`` of the calibration codes' NLLs, moved up off ties: to the first point at least
    ``margin`` from every NLL, if one lies below the ``quantile + window`` quantile, else into the middle
    of the widest gap below it. A fixed camera shows its background codes frame after frame with the same
    NLL, so a plain quantile lands on such a cluster: on the tests' tiny run at quantile 0.95 one code of
    every frame of a validation clip sat within 1e-4 nats of it, and whether it was replaced depended on
    float rounding (ONNX Runtime replaced it, PyTorch did not, and the export's parity gate refused it)."""
    v = np.sort(nll[np.isfinite(nll)].astype(np.float64))
    q = float(np.quantile(v, quantile))
    top = float(np.quantile(v, min(quantile + window, (1.0 + quantile) / 2)))
    first = np.searchsorted(v, q - margin, side="right")
    last = np.searchsorted(v, top, side="right")  # v[last], the first value above the window, closes its last gap
    near = np.unique(v[first : last + 1])
    if near.size == 0 or near[0] >= q + margin:
        return q
    if near.size == 1:  # nothing above it: above every NLL
        return float(near[0]) + margin
    lo, hi = near[:-1], near[1:]
    t = np.maximum(q, lo + margin)
    clear = t + margin <= hi
    if clear.any():
        return float(t[clear.argmax()])
    k = int((hi - lo).argmax())
    return max(q, float(lo[k] + hi[k]) / 2)


def bottom_half_any(unlikely: torch.Tensor) -> torch.Tensor:
    """For a bool grid [B, h, w]: does any of (i, j+1), (i+1, j-1), (i+1, j), (i+1, j+1) hold?"""
    u = unlikely.to(torch.float32).unsqueeze(1)
    p = F.pad(u, (1, 1, 0, 1))  # left, right, top, bottom
    right = p[:, :, 0:-1, 2:]
    below_left = p[:, :, 1:, 0:-2]
    below = p[:, :, 1:, 1:-1]
    below_right = p[:, :, 1:, 2:]
    return (right + below_left + below + below_right)[:, 0] > 0


def replace_step(
    codes: torch.Tensor, logits: torch.Tensor, threshold: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One parallel replacement step: (new codes, mask of replaced positions)."""
    unlikely = code_nll(logits, codes) > threshold
    replace = unlikely & bottom_half_any(unlikely)
    best = logits.argmax(1).to(codes.dtype)
    return torch.where(replace, best, codes), replace


def restore_fast(
    prior: PixelSNAIL, codes: torch.Tensor, logits: torch.Tensor, threshold: torch.Tensor, rounds: int
) -> torch.Tensor:
    """One step from the given logits, then ``rounds`` Jacobi steps: the original codes judged on the restored grid."""
    restored, _ = replace_step(codes, logits, threshold)
    for _ in range(rounds):
        restored, _ = replace_step(codes, prior(restored), threshold)
    return restored


@torch.no_grad()
def restore_sequential(prior: PixelSNAIL, codes: torch.Tensor, threshold: float) -> tuple[torch.Tensor, int]:
    """The exact raster-order reference for one grid [h, w]; returns (restored codes, prior passes)."""
    grid = codes.clone().unsqueeze(0)
    h, w = grid.shape[-2:]
    logits = prior(grid)
    passes = 1
    unlikely = code_nll(logits, grid)[0] > threshold  # judged again only when the grid and logits change
    for i in range(h):
        for j in range(w):
            if not unlikely[i, j]:
                continue
            neighbours = [(i, j + 1), (i + 1, j - 1), (i + 1, j), (i + 1, j + 1)]
            if not any(0 <= a < h and 0 <= b < w and bool(unlikely[a, b]) for a, b in neighbours):
                continue
            best = logits[0, :, i, j].argmax().to(grid.dtype)
            if best != grid[0, i, j]:
                grid[0, i, j] = best
                logits = prior(grid)
                passes += 1
                unlikely = code_nll(logits, grid)[0] > threshold
    return grid[0], passes
