"""Synthetic corruption of training inputs (Collin and De Vleeschouwer 2020).

The model sees a frame with a few patches replaced (noise, a constant, or content moved from elsewhere in the
frame) and is trained to give back the clean frame, so at test time it "repairs" anomalies instead of copying
them, and the residual points at them.
"""

from __future__ import annotations

import torch


def corrupt(
    x: torch.Tensor, probability: float, max_patches: int, max_fraction: float, gen: torch.Generator
) -> torch.Tensor:
    out = x.clone()
    b, _, h, w = x.shape
    for i in range(b):
        if torch.rand((), generator=gen) >= probability:
            continue
        n = int(torch.randint(1, max_patches + 1, (), generator=gen))
        for _ in range(n):
            ph = max(2, int(h * max_fraction * float(torch.rand((), generator=gen))))
            pw = max(2, int(w * max_fraction * float(torch.rand((), generator=gen))))
            y0 = int(torch.randint(0, h - ph + 1, (), generator=gen))
            x0 = int(torch.randint(0, w - pw + 1, (), generator=gen))
            kind = int(torch.randint(0, 3, (), generator=gen))
            if kind == 0:
                patch = torch.rand((x.shape[1], ph, pw), generator=gen)
            elif kind == 1:
                patch = torch.full((x.shape[1], ph, pw), float(torch.rand((), generator=gen)))
            else:
                sy = int(torch.randint(0, h - ph + 1, (), generator=gen))
                sx = int(torch.randint(0, w - pw + 1, (), generator=gen))
                patch = x[i, :, sy : sy + ph, sx : sx + pw]
            out[i, :, y0 : y0 + ph, x0 : x0 + pw] = patch.to(x.device, x.dtype)
    return out
