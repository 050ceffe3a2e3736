"""Fast (parallel) latent restoration against the exact sequential reference, on anomalous test frames.

python -m benchmarks.restoration --run RUN_DIR --data DATA_ROOT [--frames 16] [--quantile 0.95] [--rounds K]

The reference makes one prior pass per code it replaces, the fast version 1 + K passes for a whole batch,
so the speed ratio is about the reference's passes over the fast version's, times what batching saves (on
these CPUs nearly nothing: a batch of 16 grids costs about 16 single passes). At the calibrated threshold
few codes are unlikely and the two cost alike; ``--quantile`` lowers the threshold to stress the reference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def restoration_benchmark(
    run_dir: str | Path,
    data_root: str | Path,
    n_frames: int = 16,
    quantile: float | None = None,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Fast (parallel) restoration against the exact sequential reference on anomalous test frames.

    Returns the per-frame times of both, their ratio, the share of codes on which they agree, and the pixel
    AUROC of the restore map under each (on frames with masks).
    """
    from sklearn.metrics import roc_auc_score

    from edge_ad.data.ucsd import open_ucsd
    from edge_ad.errors import UserError
    from edge_ad.scoring.load import load_pipeline
    from edge_ad.scoring.restoration import restore_fast, restore_sequential
    from edge_ad.training.frames import clip_tensor

    cfg, pipe, calib = load_pipeline(run_dir)
    if pipe.prior is None or calib is None:
        raise UserError(f"{run_dir} needs a trained prior and a calibration for the restoration benchmark")
    from edge_ad.scoring.scorer import AnomalyScorer

    cfg.scoring.weights = {"restore": 1.0}  # the map under test, whatever the run's final map combines
    if rounds is not None:
        cfg.scoring.restore_rounds = rounds
    scorer = AnomalyScorer(pipe.vqvae, pipe.prior, cfg)
    scorer.restore_threshold.fill_(calib["restore_threshold"])
    if quantile is not None:  # a lower NLL quantile replaces more codes: the sequential reference's worst case
        from edge_ad.models.prior import code_nll
        from edge_ad.scoring.calibrate import validation_frames
        from edge_ad.scoring.restoration import threshold_off_ties
        from edge_ad.training.rundir import RunDir

        val = torch.from_numpy(validation_frames(RunDir(Path(run_dir)), cfg, data_root)[:128]).float()
        vcodes = pipe.encode(val)[0]
        nll = code_nll(pipe.prior(vcodes), vcodes).flatten().numpy()
        scorer.restore_threshold.fill_(threshold_off_ties(nll, quantile))  # as calibration sets it
    ds = open_ucsd(data_root)
    frames, masks = [], []
    for clip in ds.test:
        m = clip.load_masks()
        if m is None or not m.any():
            continue
        x = clip_tensor(clip, cfg).frames
        idx = np.flatnonzero(m.reshape(len(m), -1).any(1))
        pick = idx[np.linspace(0, len(idx) - 1, min(4, len(idx))).round().astype(int)]
        frames.append(x[pick])
        masks.append(m[pick])
        if sum(len(f) for f in frames) >= n_frames:
            break
    if not frames:
        raise UserError(f"{data_root} has no test frames with anomaly masks to measure restoration on")
    x = torch.from_numpy(np.concatenate(frames)[:n_frames]).float()
    gt = np.concatenate(masks)[:n_frames]
    codes, distance, _ = pipe.encode(x)
    thr = scorer.restore_threshold
    pipe.prior(codes)  # warm-up: the first pass of a process pays for allocations neither version should carry
    t0 = time.perf_counter()  # both timings include every prior pass they make, the first one too
    logits = pipe.prior(codes)
    fast = restore_fast(pipe.prior, codes, logits, thr, scorer.rounds)
    fast_s = (time.perf_counter() - t0) / len(x)
    t0 = time.perf_counter()
    seq, passes = zip(*(restore_sequential(pipe.prior, c, float(thr)) for c in codes), strict=True)
    seq_s = (time.perf_counter() - t0) / len(x)
    seq_codes = torch.stack(seq)

    def auroc(restored: torch.Tensor) -> float:
        raw = scorer.raw_maps(x, codes, distance, logits, restored=restored)
        m = raw["restore"]
        import cv2

        h, w = gt.shape[1:]
        up = np.stack([cv2.resize(a, (w, h)) for a in m[:, 0].numpy()])
        return float(roc_auc_score(gt.reshape(-1), up.reshape(-1)))

    return {
        "frames": int(len(x)),
        "rounds": scorer.rounds,
        "nll_threshold": float(thr),
        "replaced_fraction_fast": float((fast != codes).float().mean()),
        "replaced_fraction_sequential": float((seq_codes != codes).float().mean()),
        "fast_ms_per_frame": fast_s * 1e3,
        "sequential_ms_per_frame": seq_s * 1e3,
        "speed_ratio": seq_s / fast_s,
        "sequential_prior_passes_median": float(np.median(passes)),
        "sequential_prior_passes_mean": float(np.mean(passes)),
        "fast_prior_passes": 1 + scorer.rounds,
        "code_agreement": float((fast == seq_codes).float().mean()),
        "pixel_auroc_fast": auroc(fast),
        "pixel_auroc_sequential": auroc(seq_codes),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--quantile", type=float, default=None, help="NLL quantile of validation codes as threshold")
    ap.add_argument("--rounds", type=int, default=None, help="refinement rounds of the fast version (config's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = restoration_benchmark(args.run, args.data, args.frames, args.quantile, args.rounds)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(
        f"restoration ({r['rounds']} refinement rounds) on {r['frames']} anomalous frames (NLL threshold {r['nll_threshold']:.2f}, "
        f"{r['replaced_fraction_fast']:.1%} of codes replaced, {r['replaced_fraction_sequential']:.1%} by the reference): fast {r['fast_ms_per_frame']:.2f} ms/frame, sequential "
        f"{r['sequential_ms_per_frame']:.1f} ms/frame ({r['sequential_prior_passes_mean']:.1f} prior passes a frame on average, "
        f"median {r['sequential_prior_passes_median']:.0f}, against {r['fast_prior_passes']}): "
        f"{r['speed_ratio']:.0f}x faster; codes agree on {r['code_agreement']:.1%}; restore-map pixel AUROC "
        f"fast {r['pixel_auroc_fast']:.4f} vs sequential {r['pixel_auroc_sequential']:.4f} "
        f"(diff {abs(r['pixel_auroc_fast'] - r['pixel_auroc_sequential']):.4f})"
    )
    q = f" --quantile {args.quantile}" if args.quantile is not None else ""
    q += f" --rounds {args.rounds}" if args.rounds is not None else ""
    print(f"reproduce: python -m benchmarks.restoration --run {args.run} --data {args.data} --frames {args.frames}{q}")


if __name__ == "__main__":
    main()
