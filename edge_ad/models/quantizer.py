"""Vector quantizer with EMA codebook updates, data initialisation and dead-code restarts.

The nearest-code search is a matmul distance and an argmin (no ``cdist``) so it exports to plain ONNX
MatMul/ArgMin that TensorRT runs. Besides the quantized vectors it returns each position's squared distance
to its code: the alignment map (AM) of Gangloff et al.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum over DDP ranks so every replica keeps the same codebook."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


class VectorQuantizer(nn.Module):
    def __init__(
        self, dim: int, n_codes: int, decay: float = 0.99, eps: float = 1e-5, dead_threshold: float = 1.0
    ) -> None:
        super().__init__()
        self.dim, self.n_codes, self.decay, self.eps = dim, n_codes, decay, eps
        self.dead_threshold = dead_threshold
        self.register_buffer("embed", torch.randn(n_codes, dim) * 0.1)
        self.register_buffer("cluster_size", torch.zeros(n_codes))
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the nearest codes and the squared distances to them, for [N, D] vectors."""
        dist_all = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed.t() + self.embed.pow(2).sum(1)[None, :]
        idx = dist_all.argmin(1)
        quant = F.embedding(idx, self.embed)
        sq = (flat - quant).pow(2).sum(1)
        return idx, sq

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] -> quantized vectors [B, D, h, w] (the decoder's input)."""
        return F.embedding(codes.long(), self.embed).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, D, h, w] -> (quantized [B, D, h, w], codes [B, h, w], distance [B, h, w], commitment loss)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training:
            self._update(flat.detach())
        idx, sq = self.nearest(flat)
        quant = F.embedding(idx, self.embed)
        commit = F.mse_loss(flat, quant.detach())
        quant = flat + (quant - flat).detach()
        quant = quant.view(b, h, w, d).permute(0, 3, 1, 2)
        return quant, idx.view(b, h, w), sq.view(b, h, w), commit

    @torch.no_grad()
    def _update(self, flat: torch.Tensor) -> None:
        if not bool(self.initialized):
            self._init_from(flat)
        idx, _ = self.nearest(flat)
        onehot = F.one_hot(idx, self.n_codes).type(flat.dtype)
        size = _all_reduce(onehot.sum(0))
        total = _all_reduce(onehot.t() @ flat)
        self.cluster_size.mul_(self.decay).add_(size, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(total, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.n_codes * self.eps) * n
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        self._restart_dead(flat)

    def _sample(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        pick = torch.randint(0, flat.shape[0], (n,), device=flat.device)
        sample = flat[pick] + 1e-3 * torch.randn(n, flat.shape[1], device=flat.device)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(sample, 0)
        return sample

    def _init_from(self, flat: torch.Tensor) -> None:
        """Initialise the codebook from encoder outputs so no code starts far from the data."""
        sample = self._sample(flat, self.n_codes)
        self.embed.copy_(sample)
        self.embed_avg.copy_(sample)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    def _restart_dead(self, flat: torch.Tensor) -> None:
        """Move codes nobody uses onto random encoder outputs, so the codebook does not collapse."""
        dead = self.cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        sample = self._sample(flat, n_dead)
        self.embed[dead] = sample
        self.embed_avg[dead] = sample
        self.cluster_size[dead] = 1.0


def perplexity(codes: torch.Tensor, n_codes: int) -> tuple[float, float]:
    """Codebook perplexity and the fraction of codes used, over a batch of code indices."""
    counts = torch.bincount(codes.flatten(), minlength=n_codes).float()
    p = counts / counts.sum().clamp(min=1)
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    return float(ent.exp()), float((counts > 0).float().mean())
