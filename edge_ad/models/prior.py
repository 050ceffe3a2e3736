"""A PixelSNAIL-style autoregressive prior over the grid of codebook indices.

Raster order: the logits at position (i, j) depend only on codes strictly before it. Causality comes from
masked convolutions (mask "A" in the first layer excludes the centre, "B" afterwards includes it) and from
causal self-attention over all positions; one forward pass gives the logits of every position.

Export-friendly by construction: masks are constant buffers multiplied into the weights (ONNX folds them),
there are no weight-norm hooks, and the attention mask is additive with a large finite negative instead of
-inf, so TensorRT and fp16 never see inf - inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_ad.config import Config

NEG = -1e4


class MaskedConv2d(nn.Conv2d):
    def __init__(self, cin: int, cout: int, k: int, mask_type: str) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        mask = torch.ones(k, k)
        c = k // 2
        mask[c, c + (mask_type == "B") :] = 0
        mask[c + 1 :, :] = 0
        self.register_buffer("mask", mask[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class GatedResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dropout: float) -> None:
        super().__init__()
        self.conv_in = MaskedConv2d(ch, ch, k, "B")
        self.drop = nn.Dropout(dropout)
        self.conv_gate = MaskedConv2d(ch, 2 * ch, k, "B")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.elu(self.conv_in(F.elu(x))))
        a, b = self.conv_gate(h).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class CausalAttention(nn.Module):
    """Single-head attention where position i sees positions j <= i (features at j only hold codes < j)."""

    def __init__(self, ch: int, dim: int, n_positions: int) -> None:
        super().__init__()
        self.q = nn.Conv2d(ch + 2, dim, 1)
        self.k = nn.Conv2d(ch + 2, dim, 1)
        self.v = nn.Conv2d(ch + 2, dim, 1)
        self.out = nn.Conv2d(dim, ch, 1)
        self.scale = dim**-0.5
        causal = torch.triu(torch.ones(n_positions, n_positions), diagonal=1) * NEG
        self.register_buffer("causal", causal)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        xp = torch.cat([x, pos.expand(b, -1, -1, -1)], dim=1)
        q = self.q(xp).flatten(2).transpose(1, 2)  # [B, N, d]
        k = self.k(xp).flatten(2).transpose(1, 2)
        v = self.v(xp).flatten(2).transpose(1, 2)
        if self.training:
            # The fused kernel never materialises the N x N weights: 7x faster to train on CPU.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.causal)
        else:
            # The same attention written out, as the exported graph computes it: eval and export then agree
            # to float rounding, so the parity gate sees no restoration decision flip between them.
            att = torch.softmax(q @ k.transpose(1, 2) * self.scale + self.causal, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


class PixelSNAIL(nn.Module):
    def __init__(
        self,
        n_codes: int,
        grid: tuple[int, int],
        channels: int = 64,
        blocks: int = 3,
        kernel_size: int = 3,
        attention: bool = True,
        attention_dim: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_codes, self.grid = n_codes, tuple(grid)
        k = kernel_size if kernel_size % 2 else kernel_size + 1
        self.embed = nn.Embedding(n_codes, channels)
        self.conv_in = MaskedConv2d(channels, channels, k, "A")
        self.blocks = nn.ModuleList(GatedResBlock(channels, k, dropout) for _ in range(blocks))
        h, w = grid
        self.attn = CausalAttention(channels, attention_dim, h * w) if attention else None
        ys = torch.linspace(-1, 1, h)[:, None].expand(h, w)
        xs = torch.linspace(-1, 1, w)[None, :].expand(h, w)
        self.register_buffer("pos", torch.stack([ys, xs])[None])
        self.head = nn.Sequential(nn.ELU(), nn.Conv2d(channels, n_codes, 1))

    @classmethod
    def from_config(cls, cfg: Config) -> PixelSNAIL:
        f = 2**cfg.model.downsamplings
        grid = (cfg.data.size[0] // f, cfg.data.size[1] // f)
        p = cfg.prior
        return cls(
            cfg.model.n_codes, grid, p.channels, p.blocks, p.kernel_size, p.attention, p.attention_dim, p.dropout
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, h, w] (int) -> logits [B, K, h, w]."""
        x = self.embed(codes.long()).permute(0, 3, 1, 2)
        x = self.conv_in(x)
        for blk in self.blocks:
            x = blk(x)
        if self.attn is not None:
            x = self.attn(x, self.pos)
        return self.head(x)


def code_nll(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Per-position negative log-likelihood of ``codes`` under ``logits``: [B, h, w]."""
    # Channel-last log-softmax: ONNX Runtime's softmax over axis 1 of an NCHW tensor is several times slower.
    logp = F.log_softmax(logits.permute(0, 2, 3, 1), dim=-1)
    return -logp.gather(-1, codes.long().unsqueeze(-1))[..., 0]  # [..., 0], not squeeze: no ONNX If node
