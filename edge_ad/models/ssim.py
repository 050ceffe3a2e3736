"""Per-pixel SSIM with a Gaussian window, as a differentiable, ONNX-exportable torch function.

Shared by the SSIM training loss and the SM anomaly map, so both see the same definition (Wang et al. 2004,
with c1 = 0.01^2 and c2 = 0.03^2 on a [0, 1] range).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    g = gaussian_1d(size, sigma)
    return g[:, None] * g[None, :]


def separable_blur(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Blur [N, C, H, W] with the 1-D kernel ``g`` along both axes (replicate padding keeps the size).

    Channels are folded into the batch so one constant [1, 1, 1, k] kernel serves every exporter, and two
    1-D passes cost 2k instead of k^2 multiplies per pixel (single-channel 2-D convs are slow on CPU).
    """
    k = g.shape[-1]
    if k <= 1:
        return t
    p = k // 2
    # Python ints: the exported graph then declares the map's spatial size instead of computing it.
    c, h, w = (int(v) for v in t.shape[1:])
    g = g.to(t.dtype)
    flat = t.reshape(-1, 1, h, w)
    flat = F.conv2d(F.pad(flat, (p, p, 0, 0), mode="replicate"), g.view(1, 1, 1, k))
    flat = F.conv2d(F.pad(flat, (0, 0, p, p), mode="replicate"), g.view(1, 1, k, 1))
    return flat.reshape(-1, c, h, w)


def ssim_map(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, c1: float = 1e-4, c2: float = 9e-4) -> torch.Tensor:
    """SSIM per pixel and channel, [B, C, H, W]; ``g`` is the 1-D Gaussian window."""
    b = x.shape[0]
    stats = separable_blur(torch.cat([x, y, x * x, y * y, x * y]), g)
    mu_x, mu_y, exx, eyy, exy = stats[:b], stats[b : 2 * b], stats[2 * b : 3 * b], stats[3 * b : 4 * b], stats[4 * b :]
    sxx = exx - mu_x * mu_x
    syy = eyy - mu_y * mu_y
    sxy = exy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return num / den
