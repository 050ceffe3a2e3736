"""Training throughput on this machine, and the time a Ped1-sized set (6,800 frames) would take.

    python -m benchmarks.training_throughput [--config configs/tiny.yaml configs/synthetic.yaml]

Medians of timed optimisation steps at each config's batch sizes (VQ-VAE frames/s, prior code grids/s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from edge_ad.config import Config, load_config
from edge_ad.models.corruption import corrupt
from edge_ad.models.losses import reconstruction_loss
from edge_ad.models.prior import PixelSNAIL
from edge_ad.models.vqvae import VQVAE

PED1_TRAIN_FRAMES = 6800


def _median_rate(step, items_per_step: int, repeats: int) -> float:
    step()  # warm-up: allocator, thread pool
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return items_per_step / statistics.median(times)


def training_throughput(cfg: Config, repeats: int = 5) -> dict[str, Any]:
    """Frames/s of VQ-VAE training steps and code grids/s of prior steps, at the config's batch sizes."""
    torch.manual_seed(0)
    t = cfg.training
    h, w = cfg.data.size
    vq = VQVAE.from_config(cfg).train()
    opt = torch.optim.Adam(vq.parameters(), lr=t.lr)
    x = torch.rand(t.batch_size, cfg.data.in_channels, h, w)
    gen = torch.Generator().manual_seed(0)

    def vq_step() -> None:
        inp = x
        if cfg.model.corruption.enabled:
            c = cfg.model.corruption
            inp = corrupt(x, c.probability, c.max_patches, c.max_patch_fraction, gen)
        out = vq(inp)
        loss = reconstruction_loss(out["logits"], x, cfg.model.recon_loss, cfg.model.ssim_weight)[0]
        loss = loss + cfg.model.commitment * out["commitment"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    vq_rate = _median_rate(vq_step, t.batch_size, repeats)
    prior = PixelSNAIL.from_config(cfg).train()
    popt = torch.optim.AdamW(prior.parameters(), lr=t.prior_lr)
    f = 2**cfg.model.downsamplings
    codes = torch.randint(0, cfg.model.n_codes, (t.prior_batch_size, h // f, w // f))

    def prior_step() -> None:
        loss = torch.nn.functional.cross_entropy(prior(codes), codes)
        popt.zero_grad()
        loss.backward()
        popt.step()

    prior_rate = _median_rate(prior_step, t.prior_batch_size, repeats)
    ped1 = PED1_TRAIN_FRAMES * (t.epochs / vq_rate + t.prior_epochs / prior_rate)
    return {
        "config": cfg.name,
        "threads": torch.get_num_threads(),
        "vqvae_frames_per_s": vq_rate,
        "prior_grids_per_s": prior_rate,
        "ped1_projected_minutes": ped1 / 60.0,
        "epochs": t.epochs,
        "prior_epochs": t.prior_epochs,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", default=["configs/tiny.yaml", "configs/synthetic.yaml"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = [training_throughput(load_config(c), args.repeats) for c in args.config]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(
            f"{r['config']:>10}: VQ-VAE {r['vqvae_frames_per_s']:7.1f} frames/s, prior {r['prior_grids_per_s']:7.1f} "
            f"grids/s ({r['threads']} threads); Ped1-sized set (6,800 frames, {r['epochs']}+{r['prior_epochs']} "
            f"epochs): {r['ped1_projected_minutes']:.1f} min"
        )
    print("reproduce: python -m benchmarks.training_throughput")


if __name__ == "__main__":
    main()
