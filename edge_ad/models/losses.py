"""Reconstruction losses selectable by config: MSE, L1, continuous Bernoulli, plus an optional SSIM term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_ad.models.ssim import gaussian_1d, ssim_map

SSIM_WINDOW = gaussian_1d(11, 1.5)  # built once, not every training step


def continuous_bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of x in [0, 1] under a continuous Bernoulli (Loaiza-Ganem and Cunningham 2019).

    The Bernoulli cross-entropy plus the log normalising constant log C(lambda); near lambda = 0.5 the
    constant's closed form is unstable, so a Taylor expansion stands in there.
    """
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    lam = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    far = (lam - 0.5).abs() > 1e-2
    safe = torch.where(far, lam, torch.full_like(lam, 0.25))
    log_c_far = torch.log((2 * torch.atanh(1 - 2 * safe)).abs()) - torch.log((1 - 2 * safe).abs())
    d = lam - 0.5
    log_c_near = torch.log(torch.tensor(2.0)) + (4.0 / 3.0) * d**2 + (104.0 / 45.0) * d**4
    log_c = torch.where(far, log_c_far, log_c_near)
    return (bce - log_c).mean()


def reconstruction_loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str, ssim_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (loss, reconstruction in [0, 1])."""
    recon = torch.sigmoid(logits)
    if kind == "mse":
        loss = F.mse_loss(recon, target)
    elif kind == "l1":
        loss = F.l1_loss(recon, target)
    elif kind == "cbernoulli":
        loss = continuous_bernoulli_nll(logits, target)
    else:
        raise ValueError(f"unknown reconstruction loss {kind}")
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1 - ssim_map(recon, target, SSIM_WINDOW.to(target.device))).mean()
    return loss, recon
