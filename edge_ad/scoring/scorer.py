"""The anomaly score, written once: torch modules that export to the bundle's scoring graph.

Maps (each [B, 1, H, W], larger = more anomalous):
- ``residual``: |x - x_hat|, reduced over channels (the classic autoencoder residual).
- ``ssim``: 1 - SSIM(x, x_hat), reduced over channels, grey-dilated (SM of Gangloff et al.).
- ``am``: the alignment map alone: each encoder vector's squared distance to its code, upsampled and dilated.
- ``ssim_am``: ``ssim`` times the alignment map (each encoder vector's squared distance to its code),
  upsampled to the frame and grey-dilated (VQ-VAE SSIM+AM).
- ``nll``: the prior's per-position negative log-likelihood of the codes, upsampled.
- ``restore``: 1 - SSIM(x, decode(restored codes)) after latent-space restoration (Wang et al.).
- ``restore_diff``: |decode(codes) - decode(restored codes)|: zero wherever the prior left the codes alone.
- ``speed``: the apparent speed of what moves, in pixels a frame (``speed.py``), from the frame and its first
  motion channel: a skater moves like no walker even where it looks like one.
- ``background``: |frame - the scene without anyone in it|, the background being each pixel's median over the
  normal calibration frames, less the frame's mean difference (the light drifts). No network: a cart at walking
  pace covers more of the scene than any walker does, where the frame's residual sees mostly its outline.

A map that compares channels may name them (``residual@frame``, ``residual@motion``). Each map is normalised
with statistics from normal validation clips (calibration); the maps are smoothed and fused (weighted mean
or max); the frame score is the mean of the top-k pixels (or the max; with several areas, the max of
their standardised top-k means); the published map is dilated.
Nothing here is repeated in numpy: the runtime gets all of it inside the exported graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edge_ad.config import Config
from edge_ad.models.prior import PixelSNAIL, code_nll
from edge_ad.models.ssim import gaussian_1d, separable_blur, ssim_map
from edge_ad.models.vqvae import VQVAE
from edge_ad.scoring.restoration import restore_fast
from edge_ad.scoring.speed import Speed

MAPS = ("residual", "ssim", "am", "ssim_am", "nll", "restore", "restore_diff", "speed", "background")
PRIOR_MAPS = {"nll", "restore", "restore_diff"}


def base_map(name: str) -> str:
    """``residual@motion`` -> ``residual``."""
    return name.partition("@")[0]


def active_maps(weights: dict[str, float], has_prior: bool) -> list[str]:
    """The weighted maps this run can compute, in a fixed order (MAPS, then the channel group)."""
    names = [n for n, w in weights.items() if w > 0 and (has_prior or base_map(n) not in PRIOR_MAPS)]
    return sorted(names, key=lambda n: (MAPS.index(base_map(n)), n))


def dilate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Grey dilation as a stride-1 max-pool (keeps the size for odd k)."""
    if k <= 1:
        return x
    k = k if k % 2 else k + 1
    return F.max_pool2d(x, k, stride=1, padding=k // 2)


def quantize(vqvae: VQVAE, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference-time quantization: (codes int32 [B, h, w], squared distance to the code [B, h, w])."""
    b, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    idx, sq = vqvae.quantizer.nearest(flat)
    return idx.to(torch.int32).view(b, h, w), sq.view(b, h, w)


class AnomalyScorer(nn.Module):
    """(frames, codes, distance, prior logits) -> (anomaly map [B, 1, H, W], frame score [B])."""

    # The buffers calibration sets from normal frames (saved next to the run as normalisation.safetensors).
    CALIBRATED = ("center", "scale", "score_center", "score_scale", "area_center", "area_scale", "background")

    def __init__(self, vqvae: VQVAE, prior: PixelSNAIL | None, cfg: Config) -> None:
        super().__init__()
        s = cfg.scoring
        self.vqvae, self.prior = vqvae, prior
        self.size = tuple(cfg.data.size)
        self.names = active_maps(s.weights, prior is not None)
        if not self.names:
            raise ValueError("no anomaly map is active (all weighted maps need the prior, which this run lacks)")
        self.needs_prior = any(n in PRIOR_MAPS for n in self.names)
        self.ssim_dilation, self.am_dilation = s.ssim_dilation, s.am_dilation
        self.rounds = s.restore_rounds
        self.channel_reduce = s.channel_reduce
        colour = cfg.data.colour_channels
        self.groups = {"all": slice(None), "frame": slice(0, colour), "motion": slice(colour, None)}
        # The speed map reads the frame and its first (smallest-offset) motion channel, which holds the difference
        # to the frame that many steps back. (A clip's first frames, with fewer frames behind them, were given
        # the oldest one there is: their speed reads low, frame 0's zero.)
        self.colour = colour
        self.speed_steps = min(cfg.data.temporal_offsets, default=0)
        self.speed = Speed(s.speed_window) if "speed" in self.names else None
        self.default_group = s.compare_channels
        self.fusion, self.map_dilation = s.fusion, s.map_dilation
        self.frame_mode = s.frame_score
        h, w = self.size
        self.cfg_areas = s.topk_areas()
        self.topks = [max(1, round(f * h * w)) for f in self.cfg_areas]
        self.register_buffer("window", gaussian_1d(s.ssim_window, s.ssim_sigma))
        radius = math.ceil(3 * s.smoothing_sigma) if s.smoothing_sigma > 0 else 0
        smooth = gaussian_1d(2 * radius + 1, s.smoothing_sigma) if radius else torch.ones(1)
        self.register_buffer("smooth", smooth)
        self.register_buffer("weights", torch.tensor([s.weights[m] for m in self.names], dtype=torch.float32))
        # Set by calibration on normal validation clips (one value per map, or one per pixel); identity until then.
        self.register_buffer("center", torch.zeros(len(self.names), h, w))
        self.register_buffer("scale", torch.ones(len(self.names), h, w))
        self.register_buffer("restore_threshold", torch.tensor(1e9))
        # The scene's background (frame channels), for the background map: mid-grey until calibration.
        self.register_buffer("background", torch.full((colour, h, w), 0.5))
        # For a max fusion, each normalised map is then shifted and scaled so that its frame score on the same
        # frames has median 0 and 99th percentile 1: maps of different kinds weigh alike, in false-alarm terms.
        self.register_buffer("score_center", torch.zeros(len(self.names)))
        self.register_buffer("score_scale", torch.ones(len(self.names)))
        # With several top-k areas, each area's score is standardised the same way before their max.
        self.register_buffer("area_center", torch.zeros(len(self.topks)))
        self.register_buffer("area_scale", torch.ones(len(self.topks)))

    def _up(self, m: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "nearest":
            return F.interpolate(m.unsqueeze(1), size=self.size, mode="nearest")
        return F.interpolate(m.unsqueeze(1), size=self.size, mode="bilinear", align_corners=False)

    def _channels(self, name: str) -> slice:
        group = name.partition("@")[2] or self.default_group
        return self.groups[group]

    def _reduce(self, d: torch.Tensor, name: str) -> torch.Tensor:
        return self._merge(d[:, self._channels(name)])

    def _merge(self, d: torch.Tensor) -> torch.Tensor:
        # max: a motion channel's error is not diluted by a well-reconstructed appearance channel
        return d.amax(1, keepdim=True) if self.channel_reduce == "max" else d.mean(1, keepdim=True)

    def _frame_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grey frame, grey frame ``speed_steps`` back) from the frame and its first motion channel, which
        holds 0.5 + (frame - earlier) / 2 (``edge_ad.data.preprocess.encode_difference``)."""
        c = self.colour
        current = x[:, :c].mean(1, keepdim=True)
        change = 2 * (x[:, c : 2 * c] - 0.5).mean(1, keepdim=True)
        return current, current - change

    def _background(self, x: torch.Tensor) -> torch.Tensor:
        d = x[:, : self.colour] - self.background
        return self._merge((d - d.mean((2, 3), keepdim=True)).abs())  # a global change of light is no object

    def raw_maps(
        self,
        x: torch.Tensor,
        codes: torch.Tensor,
        distance: torch.Tensor,
        logits: torch.Tensor | None,
        restored: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every active map; ``restored`` overrides the fast restoration (to score the exact reference)."""
        bases = {base_map(n) for n in self.names}
        if any(b.startswith("restore") for b in bases):
            assert self.prior is not None and logits is not None
            if restored is None:
                restored = restore_fast(self.prior, codes, logits, self.restore_threshold, self.rounds)
            both = self.vqvae.decode_codes(torch.cat([codes, restored]))
            b = x.shape[0]
            x_hat, x_rest = both[:b], both[b:]
        else:
            x_hat = self.vqvae.decode_codes(codes)
        # Per-channel pieces, computed once and shared by the maps (and channel groups) that use them.
        dissimilarity = 1 - ssim_map(x, x_hat, self.window) if bases & {"ssim", "ssim_am"} else None
        am = dilate(self._up(distance, "nearest"), self.am_dilation) if bases & {"am", "ssim_am"} else None
        restore_dissimilarity = 1 - ssim_map(x, x_rest, self.window) if "restore" in bases else None
        speed = self.speed(*self._frame_pair(x), self.speed_steps) if self.speed is not None else None
        out: dict[str, torch.Tensor] = {}
        for name in self.names:
            base = base_map(name)
            if base == "residual":
                out[name] = self._reduce((x - x_hat).abs(), name)
            elif base in ("ssim", "ssim_am"):
                sm = dilate(self._reduce(dissimilarity, name), self.ssim_dilation)
                out[name] = sm * am if base == "ssim_am" else sm
            elif base == "am":
                out[name] = am
            elif base == "nll":
                out[name] = self._up(code_nll(logits, codes), "bilinear")
            elif base == "restore":
                out[name] = self._reduce(restore_dissimilarity, name)
            elif base == "speed":
                out[name] = speed
            elif base == "background":
                out[name] = self._background(x)
            else:  # restore_diff: zero wherever the prior left the codes alone
                out[name] = (x_hat - x_rest)[:, self._channels(name)].abs().mean(1, keepdim=True)
        return out

    def normalised(self, raw: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """One map in the common scale of the fusion: per-map (or per-pixel) statistics, then frame-score scaling."""
        i = self.names.index(name)
        z = (raw[name] - self.center[i]) / self.scale[i]
        return (z - self.score_center[i]) / self.score_scale[i]

    def combine(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fused, smoothed map the frame score is taken from (before ``outline``)."""
        if (
            self.fusion == "max"
        ):  # each map smoothed first, as in calibration: a max of unsmoothed maps favours the noisier
            return torch.stack([self.weights[i] * self.single(raw, n) for i, n in enumerate(self.names)]).amax(0)
        total = sum(self.weights[i] * self.normalised(raw, n) for i, n in enumerate(self.names))
        return separable_blur(total / self.weights.sum(), self.smooth)  # smoothing is linear: once for the sum

    def single(self, raw: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """One map alone, normalised and smoothed (a view in evaluation, and each term of the fusion)."""
        return separable_blur(self.normalised(raw, name), self.smooth)

    def outline(self, m: torch.Tensor) -> torch.Tensor:
        """The published map: dilated so that it covers an object whose edges the residual lit up."""
        return dilate(m, self.map_dilation)

    def area_scores(self, m: torch.Tensor) -> torch.Tensor:
        """[A, B]: the mean of each area's top-k pixels, from one sorted top-k of the largest area."""
        top = m.flatten(1).topk(max(self.topks), dim=1).values
        return torch.stack([top[:, :k].mean(1) for k in self.topks])

    def reference_score(self, m: torch.Tensor) -> torch.Tensor:
        """The frame score at the reference area alone (the scale of each map in a max fusion)."""
        if self.frame_mode == "max":
            return m.flatten(1).max(1).values
        return m.flatten(1).topk(self.topks[0], dim=1).values.mean(1)

    def frame_score(self, m: torch.Tensor) -> torch.Tensor:
        if self.frame_mode == "max" or len(self.topks) == 1:
            return self.reference_score(m)
        z = (self.area_scores(m) - self.area_center[:, None]) / self.area_scale[:, None]
        return z.amax(0)

    def forward(
        self, x: torch.Tensor, codes: torch.Tensor, distance: torch.Tensor, logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.combine(self.raw_maps(x, codes, distance, logits))
        return self.outline(m), self.frame_score(m)


class AnomalyPipeline(nn.Module):
    """frames -> (anomaly map, frame score): the whole chain the runtime runs as one graph."""

    def __init__(self, vqvae: VQVAE, prior: PixelSNAIL | None, scorer: AnomalyScorer) -> None:
        super().__init__()
        self.vqvae, self.prior, self.scorer = vqvae, prior, scorer

    def encode(
        self, frames: torch.Tensor, with_logits: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``with_logits``: run the prior whatever this scorer needs (evaluation shares one encoding between
        two scorers); by default the prior runs only when a weighted map needs it, so no dead work on the live path."""
        codes, distance = quantize(self.vqvae, self.vqvae.encoder(frames))
        wanted = self.scorer.needs_prior if with_logits is None else with_logits
        logits = self.prior(codes) if self.prior is not None and wanted else None
        return codes, distance, logits

    def raw_maps(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.scorer.raw_maps(frames, *self.encode(frames))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scorer(frames, *self.encode(frames))
