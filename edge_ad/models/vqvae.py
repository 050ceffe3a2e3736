"""The VQ-VAE: strided-conv encoder, vector quantizer, mirrored decoder (after rosinality's vq-vae-2-pytorch).

The decoder outputs logits; ``reconstruct`` applies the sigmoid, so reconstructions live in [0, 1] like the
inputs, and the continuous-Bernoulli loss of Gangloff et al. can use the logits directly.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_ad.config import Config
from edge_ad.models.quantizer import VectorQuantizer


class ResBlock(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    def __init__(self, in_ch: int, width: int, res_blocks: int, res_width: int, downs: int, embed_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(downs):
            out = width // 2 if i < downs - 1 else width
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.ReLU()]
            ch = out
        layers.append(nn.Conv2d(ch, width, 3, padding=1))
        layers += [ResBlock(width, res_width) for _ in range(res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(width, embed_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, out_ch: int, width: int, res_blocks: int, res_width: int, ups: int, embed_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(embed_dim, width, 3, padding=1)]
        layers += [ResBlock(width, res_width) for _ in range(res_blocks)]
        layers.append(nn.ReLU())
        ch = width
        for i in range(ups):
            last = i == ups - 1
            out = out_ch if last else width // 2
            layers.append(nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            ch = out
        self.net = nn.Sequential(*layers)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.net(q)


class VQVAE(nn.Module):
    def __init__(
        self,
        in_ch: int = 1,
        width: int = 64,
        res_blocks: int = 2,
        res_width: int = 32,
        downsamplings: int = 2,
        embed_dim: int = 32,
        n_codes: int = 256,
        decay: float = 0.99,
        dead_threshold: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_ch, self.downsamplings, self.n_codes = in_ch, downsamplings, n_codes
        self.encoder = Encoder(in_ch, width, res_blocks, res_width, downsamplings, embed_dim)
        self.quantizer = VectorQuantizer(embed_dim, n_codes, decay, dead_threshold=dead_threshold)
        self.decoder = Decoder(in_ch, width, res_blocks, res_width, downsamplings, embed_dim)

    @classmethod
    def from_config(cls, cfg: Config) -> VQVAE:
        m = cfg.model
        return cls(
            cfg.data.in_channels, m.width, m.res_blocks, m.res_width, m.downsamplings, m.embed_dim, m.n_codes,
            m.decay, m.dead_code_threshold,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(x)
        quant, codes, dist, commit = self.quantizer(z)
        logits = self.decoder(quant)
        return {"logits": logits, "codes": codes, "distance": dist, "commitment": commit}

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] -> reconstruction in [0, 1]."""
        return torch.sigmoid(self.decoder(self.quantizer.lookup(codes)))
