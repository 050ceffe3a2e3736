"""How much of the motion channel a trained VQ-VAE reproduces, on the test clips' moving pixels.

python -m benchmarks.motion_share --run RUN_DIR --data DATA_ROOT [--json]

The motion residual is only as good as the decoder's idea of normal motion. This measures it: for each
motion channel, the least-squares share of the input's motion signal (the channel less its rest value 0.5)
that the reconstruction carries, over the pixels where something moved: 1 when the decoder reproduces all
of it, 0 when it draws a still scene (then the motion residual is the motion channel itself, a normalised
frame difference). Split by the ground truth: moving pixels of anomalies and of everything else (in colour,
each of a pixel's three values counts as one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

MOVING = 0.02  # a motion-channel value this far from 0.5 (a 4 % grey-level change): something moved
REGIONS = ("anomaly", "other")


def share_sums(x: torch.Tensor, x_hat: torch.Tensor, gt: torch.Tensor, colour: int) -> np.ndarray:
    """[motion group, region, (sum of x_hat * x, sum of x * x, moving values)] for one batch, both centred on
    the rest value 0.5. ``x``, ``x_hat``: [B, C, H, W] model input and reconstruction, the frame's ``colour``
    channels first, then one group of ``colour`` per offset; ``gt``: [B, H, W] anomaly masks."""
    groups = x.shape[1] // colour - 1
    out = np.zeros((groups, len(REGIONS), 3))
    gt = gt[:, None].expand(-1, colour, -1, -1)
    for j in range(groups):
        group = slice(colour * (1 + j), colour * (2 + j))
        m_in, m_out = x[:, group] - 0.5, x_hat[:, group] - 0.5
        moving = m_in.abs() > MOVING
        for r, sel in enumerate((moving & gt, moving & ~gt)):
            out[j, r] = float((m_out * m_in)[sel].sum()), float((m_in**2)[sel].sum()), int(sel.sum())
    return out


@torch.no_grad()
def motion_share(run_dir: str | Path, data_root: str | Path, batch: int = 32) -> dict[str, Any]:
    """Per motion channel: the reproduced share on anomalous and on other moving pixels, and their counts."""
    from edge_ad.data.ucsd import open_ucsd
    from edge_ad.errors import UserError
    from edge_ad.evaluation.report import resize_masks
    from edge_ad.scoring.load import load_pipeline
    from edge_ad.training.frames import clip_tensor

    cfg, pipe, _ = load_pipeline(run_dir, calibrated=False)
    offsets = list(cfg.data.temporal_offsets)
    if not offsets:
        raise UserError(f"{run_dir} has no motion channels (data.temporal_offsets is empty): nothing to measure")
    clips = open_ucsd(data_root).test
    if not clips:
        raise UserError(f"{data_root} has no test clips (Test/TestNNN): nothing to measure")
    size = tuple(cfg.data.size)
    sums = np.zeros((len(offsets), len(REGIONS), 3))
    for clip in clips:
        x = torch.from_numpy(clip_tensor(clip, cfg).frames).float()
        masks = clip.load_masks()
        gt = (
            torch.from_numpy(resize_masks(masks, size))
            if masks is not None
            else torch.zeros(len(x), *size, dtype=torch.bool)
        )
        for i in range(0, len(x), batch):
            xb = x[i : i + batch]
            x_hat = pipe.vqvae.decode_codes(pipe.encode(xb, with_logits=False)[0])
            sums += share_sums(xb, x_hat, gt[i : i + batch], cfg.data.colour_channels)
    channels = {
        f"motion k={k}": {
            region: {"share": s[0] / s[1] if s[1] > 0 else None, "moving_pixels": int(s[2])}
            for region, s in zip(REGIONS, per_region, strict=True)
        }
        for k, per_region in zip(offsets, sums, strict=True)
    }
    return {"run": str(run_dir), "data": str(data_root), "channels": channels,
            "command": f"python -m benchmarks.motion_share --run {run_dir} --data {data_root}"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run directory")
    ap.add_argument("--data", required=True, help="its data root (UCSD layout); the test clips are read")
    ap.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = ap.parse_args(argv)
    from edge_ad.errors import UserError

    try:
        result = motion_share(args.run, args.data)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, regions in result["channels"].items():
        text = ", ".join(
            f"{region} {r['share']:.3f} of {r['moving_pixels']} moving pixels" if r["share"] is not None
            else f"{region}: no moving pixels"
            for region, r in regions.items()
        )  # fmt: skip
        print(f"{name}: share of the motion signal the decoder reproduces: {text}", file=sys.stderr)
    print(f"reproduce: {result['command']}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
