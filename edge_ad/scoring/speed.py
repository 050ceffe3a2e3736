"""The apparent speed of what moves, from a frame and the one k steps before it (Lucas-Kanade, one scale).

The VQ-VAE trained on CPU budgets learns the scene's background, not its walkers: its reconstruction of the
motion channel stays flat, so the motion residual is the frame difference itself (README, Method). A frame
difference grows with an object's contrast and size, and with the crowd; a speed does not. A skater or a
cyclist moves two to four times as fast as a walker, which is how an operator tells them apart.

Per pixel, the flow (u, v) that best explains the change between the frames in a Gaussian window, by least
squares over brightness constancy (I_x u + I_y v + I_t = 0); the speed is its length in pixels a frame. A
ridge term keeps flat regions (no gradient, no flow to measure) at zero. One scale linearises the frames over
its +-2 px stencil: from 1 to 3 px a frame it reads a moving figure's speed within 45 % (over, at high
contrast; tests/test_speed.py), beyond that a value that still grows. The map needs the order, a skater
above a walker, not the figure. Written in torch ops that export to ONNX (pads, slices, separable blurs), so
the runtime gets it inside the scoring graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edge_ad.models.ssim import gaussian_1d, separable_blur

PRESMOOTH_SIGMA = 1.0  # px: the frames' fine grain would otherwise decide the gradients
# Gradients are differences over +-2 px: brightness constancy is linearised over the stencil, so a wider one
# keeps a mover of 2-3 px a frame in range (a walker's edge measured over +-1 px reads 4 px a frame as 3).
STENCIL = 2
# Added to the windowed squared gradients: where the frame has less than about 0.01 of contrast a pixel (flat
# paving, sensor noise) no flow is read. 1e-3 would also quench a grey walker on grey paving (0.1 contrast).
RIDGE = 1e-4


def _kernel(sigma: float) -> torch.Tensor:
    return gaussian_1d(2 * math.ceil(3 * sigma) + 1, sigma)


def _gradients(m: torch.Tensor, h: int = STENCIL) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences over +-h px with replicated borders (the frame edge is no edge)."""
    px = F.pad(m, (h, h, 0, 0), mode="replicate")
    py = F.pad(m, (0, 0, h, h), mode="replicate")
    return (px[..., 2 * h :] - px[..., : -2 * h]) / (2 * h), (py[..., 2 * h :, :] - py[..., : -2 * h, :]) / (2 * h)


class Speed(nn.Module):
    """(frame, earlier frame, steps between them) -> speed in pixels a frame, [B, 1, H, W]."""

    def __init__(self, window_sigma: float = 2.0) -> None:
        super().__init__()
        self.register_buffer("presmooth", _kernel(PRESMOOTH_SIGMA))
        self.register_buffer("window", _kernel(window_sigma))

    def forward(self, current: torch.Tensor, earlier: torch.Tensor, steps: int = 1) -> torch.Tensor:
        a, b = separable_blur(current, self.presmooth), separable_blur(earlier, self.presmooth)
        ix, iy = _gradients(0.5 * (a + b))
        it = a - b
        w = self.window
        sxx = separable_blur(ix * ix, w) + RIDGE
        syy = separable_blur(iy * iy, w) + RIDGE
        sxy, sxt, syt = separable_blur(ix * iy, w), separable_blur(ix * it, w), separable_blur(iy * it, w)
        det = sxx * syy - sxy * sxy  # > RIDGE^2: the structure tensor is positive semi-definite
        u = (sxy * syt - syy * sxt) / det
        v = (sxy * sxt - sxx * syt) / det
        return torch.sqrt(u * u + v * v + 1e-12) / steps
