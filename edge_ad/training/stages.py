"""The two training stages: the VQ-VAE on normal frames, then the prior on the codes of those frames."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from edge_ad.config import Config
from edge_ad.errors import UserError
from edge_ad.models.corruption import corrupt
from edge_ad.models.losses import reconstruction_loss
from edge_ad.models.prior import PixelSNAIL
from edge_ad.models.quantizer import perplexity
from edge_ad.models.vqvae import VQVAE
from edge_ad.training import checkpoint
from edge_ad.training.loop import barrier, batches, is_main, progress, reduce_mean
from edge_ad.training.rundir import RunDir


@dataclass
class StageContext:
    cfg: Config
    run: RunDir
    device: torch.device
    rank: int = 0
    world: int = 1
    resume: bool = False


def _check_finite(loss: torch.Tensor, stage: str, epoch: int, lr: float) -> None:
    if not torch.isfinite(loss):
        raise UserError(
            f"{stage} loss became {loss.item()} in epoch {epoch + 1}; lower the learning rate (now {lr:g}) "
            "or check the frames for corrupt values"
        )


def _cosine_lr(opt: torch.optim.Optimizer, base: float, epoch: int, total: int) -> None:
    lr = base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * epoch / max(total, 1))))
    for g in opt.param_groups:
        g["lr"] = lr


def _log(ctx: StageContext, record: dict[str, Any]) -> None:
    if is_main():
        ctx.run.append_log(record)
        print(_format(record), flush=True)


def _format(record: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
    return "  ".join(parts)


def _checkpoint(
    ctx: StageContext,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    score: float,
    best: float,
    stale: int,
    best_path: Path,
    last_path: Path,
) -> tuple[float, int]:
    """Save the last epoch (with the optimizer, for --resume) and the best one; returns (best, epochs stale)."""
    improved = score < best
    best, stale = (score, 0) if improved else (best, stale + 1)
    if is_main():
        meta = {"epoch": epoch, "best": best, "stale": stale, "fingerprint": checkpoint.fingerprint(ctx.cfg)}
        if improved:
            checkpoint.save(best_path, model, meta)
        checkpoint.save(last_path, model, meta, opt)
    return best, stale


def _resume(ctx: StageContext, path, model, opt, epochs: int) -> tuple[int, float, int]:
    """(first epoch, best validation loss, epochs without improvement) from the last checkpoint. A stage
    that had stopped early is finished: it resumes past its last epoch, so it trains no more."""
    if not (ctx.resume and path.is_file()):
        return 0, float("inf"), 0
    meta = checkpoint.load(path, model, ctx.cfg, opt)
    stale = int(meta.get("stale", 0))
    start = int(meta["epoch"]) + 1
    if stale >= ctx.cfg.training.patience:
        start = max(start, epochs)
    return start, float(meta.get("best", float("inf"))), stale


@torch.no_grad()
def vqvae_validation(model: VQVAE, x: np.ndarray, device: torch.device, batch: int = 64) -> dict[str, float]:
    """Mean squared reconstruction error and codebook perplexity on held-out normal frames."""
    model.eval()
    total, n, codes = 0.0, 0, []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch]).float().to(device)
        out = model(xb)
        total += float(F.mse_loss(torch.sigmoid(out["logits"]), xb, reduction="sum")) / xb[0].numel()
        n += len(xb)
        codes.append(out["codes"].cpu())
    ppl, usage = perplexity(torch.cat(codes), model.n_codes) if codes else (0.0, 0.0)
    return {"val_mse": total / max(n, 1), "val_perplexity": ppl, "val_usage": usage}


def train_vqvae(ctx: StageContext, train_x: np.ndarray, val_x: np.ndarray) -> tuple[VQVAE, int]:
    """The best VQ-VAE, and how many epochs this call trained (0: a resumed stage that had finished)."""
    cfg, t = ctx.cfg, ctx.cfg.training
    model = VQVAE.from_config(cfg).to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    start, best, stale = _resume(ctx, ctx.run.vqvae_last, model, opt, t.epochs)
    ran = 0
    net = DistributedDataParallel(model) if ctx.world > 1 else model
    gen = torch.Generator().manual_seed(t.seed)
    cgen = torch.Generator().manual_seed(t.seed + 1)
    for _ in range(start):  # keep the shuffling identical to an uninterrupted run
        torch.randperm(len(train_x), generator=gen)
    data = torch.from_numpy(train_x)
    mc = cfg.model
    for epoch in range(start, t.epochs):
        _cosine_lr(opt, t.lr, epoch, t.epochs)
        model.train()
        t0, seen, losses, codes = time.perf_counter(), 0, [], []
        n_steps = math.ceil(len(train_x) / ctx.world / t.batch_size)
        with progress() as bar:
            task = bar.add_task(f"vqvae {epoch + 1}/{t.epochs}", total=n_steps, info="")
            for idx in batches(len(train_x), t.batch_size, gen, ctx.rank, ctx.world):
                x = data[idx].float().to(ctx.device)
                inp = x
                if mc.corruption.enabled:
                    c = mc.corruption
                    inp = corrupt(x, c.probability, c.max_patches, c.max_patch_fraction, cgen)
                out = net(inp)
                rec, _ = reconstruction_loss(out["logits"], x, mc.recon_loss, mc.ssim_weight)
                loss = rec + mc.commitment * out["commitment"]
                _check_finite(loss, "VQ-VAE", epoch, opt.param_groups[0]["lr"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(x)
                losses.append(float(rec.detach()))
                codes.append(out["codes"].detach().cpu())
                bar.update(task, advance=1, info=f"loss {np.mean(losses[-20:]):.4f}")
        dt = time.perf_counter() - t0
        ppl, usage = perplexity(torch.cat(codes), mc.n_codes)
        record = {
            "stage": "vqvae",
            "epoch": epoch + 1,
            "loss": reduce_mean(float(np.mean(losses)), ctx.device),
            "perplexity": ppl,
            "usage": usage,
            "frames_per_s": seen * ctx.world / dt,
            "lr": opt.param_groups[0]["lr"],
        }
        val = vqvae_validation(model, val_x if len(val_x) else train_x[:256], ctx.device)
        record.update(val)
        best, stale = _checkpoint(
            ctx, model, opt, epoch, val["val_mse"], best, stale, ctx.run.vqvae, ctx.run.vqvae_last
        )
        ran += 1
        _log(ctx, record)
        if stale >= t.patience:
            _log(ctx, {"stage": "vqvae", "event": "early_stop", "epoch": epoch + 1})
            break
    barrier()
    checkpoint.load(ctx.run.vqvae, model, cfg)
    return model.eval(), ran


@torch.no_grad()
def encode_codes(model: VQVAE, x: np.ndarray, device: torch.device, batch: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch]).float().to(device)
        _, codes, _, _ = model.quantizer(model.encoder(xb))
        out.append(codes.to(torch.int16).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.int16)


@torch.no_grad()
def prior_nll(prior: PixelSNAIL, codes: np.ndarray, device: torch.device, batch: int = 64) -> float:
    prior.eval()
    total, n = 0.0, 0
    for i in range(0, len(codes), batch):
        c = torch.from_numpy(codes[i : i + batch]).long().to(device)
        total += float(F.cross_entropy(prior(c), c, reduction="sum"))
        n += c.numel()
    return total / max(n, 1)


def train_prior(ctx: StageContext, train_codes: np.ndarray, val_codes: np.ndarray) -> PixelSNAIL:
    cfg, t = ctx.cfg, ctx.cfg.training
    prior = PixelSNAIL.from_config(cfg).to(ctx.device)
    opt = torch.optim.AdamW(prior.parameters(), lr=t.prior_lr, weight_decay=1e-4)
    start, best, stale = _resume(ctx, ctx.run.prior_last, prior, opt, t.prior_epochs)
    net = DistributedDataParallel(prior) if ctx.world > 1 else prior
    gen = torch.Generator().manual_seed(t.seed + 2)
    for _ in range(start):
        torch.randperm(len(train_codes), generator=gen)
    data = torch.from_numpy(train_codes)
    for epoch in range(start, t.prior_epochs):
        _cosine_lr(opt, t.prior_lr, epoch, t.prior_epochs)
        prior.train()
        t0, seen, losses = time.perf_counter(), 0, []
        n_steps = math.ceil(len(train_codes) / ctx.world / t.prior_batch_size)
        with progress() as bar:
            task = bar.add_task(f"prior {epoch + 1}/{t.prior_epochs}", total=n_steps, info="")
            for idx in batches(len(train_codes), t.prior_batch_size, gen, ctx.rank, ctx.world):
                c = data[idx].long().to(ctx.device)
                loss = F.cross_entropy(net(c), c)
                _check_finite(loss, "prior", epoch, opt.param_groups[0]["lr"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
                opt.step()
                seen += len(c)
                losses.append(float(loss.detach()))
                bar.update(task, advance=1, info=f"nll {np.mean(losses[-20:]):.3f}")
        dt = time.perf_counter() - t0
        val = prior_nll(prior, val_codes if len(val_codes) else train_codes[:256], ctx.device)
        best, stale = _checkpoint(ctx, prior, opt, epoch, val, best, stale, ctx.run.prior, ctx.run.prior_last)
        _log(
            ctx,
            {
                "stage": "prior",
                "epoch": epoch + 1,
                "nll": reduce_mean(float(np.mean(losses)), ctx.device),
                "val_nll": val,
                "grids_per_s": seen * ctx.world / dt,
            },
        )
        if stale >= t.patience:
            _log(ctx, {"stage": "prior", "event": "early_stop", "epoch": epoch + 1})
            break
    barrier()
    checkpoint.load(ctx.run.prior, prior, cfg)
    return prior.eval()
