"""How much of the motion channel a trained VQ-VAE reproduces, on the test clips' moving pixels.

python -m benchmarks.motion_share --run RUN_DIR --data DATA_ROOT [--json]

The motion residual is only as good as the decoder's idea of normal motion. This measures it: for each
motion channel, the least-squares share of the input's motion signal (the channel less its rest value 0.5)
that the reconstruction carries, over the pixels where something moved: 1 when the decoder reproduces all
of it, 0 when it draws a still scene (then the motion residual is the motion channel itself, a normalised
frame difference). Split by the ground truth: moving pixels of anomalies and of everything else.
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


def _share(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@torch.no_grad()
def motion_share(run_dir: str | Path, data_root: str | Path, batch: int = 32) -> dict[str, Any]:
    """Per motion channel: the reproduced share on anomalous and on other moving pixels, and their counts."""
    import cv2

    from edge_ad.data.ucsd import open_ucsd
    from edge_ad.errors import UserError
    from edge_ad.scoring.load import load_pipeline
    from edge_ad.training.frames import clip_tensor

    cfg, pipe, _ = load_pipeline(run_dir)
    offsets = list(cfg.data.temporal_offsets)
    if not offsets:
        raise UserError(f"{run_dir} has no motion channels (data.temporal_offsets is empty): nothing to measure")
    first = 1 if cfg.data.grayscale else 3
    h, w = cfg.data.size
    # per channel, per region: [sum of x_hat * x, sum of x * x, pixel count], both centred on 0.5
    sums = {k: {"anomaly": np.zeros(3), "other": np.zeros(3)} for k in offsets}
    for clip in open_ucsd(data_root).test:
        x = torch.from_numpy(clip_tensor(clip, cfg).frames).float()
        masks = clip.load_masks()
        if masks is not None:
            masks = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in masks])
        for i in range(0, len(x), batch):
            xb = x[i : i + batch]
            x_hat = pipe.vqvae.decode_codes(pipe.encode(xb)[0])
            gt = (
                torch.from_numpy(masks[i : i + batch] > 0)
                if masks is not None
                else torch.zeros(len(xb), h, w, dtype=torch.bool)
            )
            for j, k in enumerate(offsets):
                m_in, m_out = xb[:, first + j] - 0.5, x_hat[:, first + j] - 0.5
                moving = m_in.abs() > MOVING
                for region, sel in (("anomaly", moving & gt), ("other", moving & ~gt)):
                    sums[k][region] += [float((m_out * m_in)[sel].sum()), float((m_in**2)[sel].sum()), int(sel.sum())]
    channels = {
        f"motion k={k}": {
            region: {"share": _share(s[0], s[1]), "moving_pixels": int(s[2])} for region, s in regions.items()
        }
        for k, regions in sums.items()
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
