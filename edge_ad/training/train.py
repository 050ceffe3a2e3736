"""``edge-ad train``: the VQ-VAE on normal clips, then the prior on their codes, in one run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from edge_ad.config import Config
from edge_ad.data.ucsd import UCSDDataset, open_ucsd
from edge_ad.errors import UserError
from edge_ad.models.vqvae import VQVAE
from edge_ad.training import checkpoint
from edge_ad.training.frames import check_frame_sizes, clip_tensor, split_clips, stack
from edge_ad.training.loop import init_distributed, is_main, pick_device, seed_everything
from edge_ad.training.rundir import RunDir
from edge_ad.training.stages import StageContext, encode_codes, train_prior, train_vqvae

Stage = Literal["vqvae", "prior", "all"]


def _check_resume(run: RunDir, cfg: Config, ds: UCSDDataset) -> None:
    """A resumed run continues the same training: same model and data config, same data."""
    if not run.config.is_file():
        raise UserError(f"--resume: {run.root} holds no run to continue; leave out --resume to start one there")
    if run.split.is_file():  # by clip names, not by path: a data folder may have moved since
        split = run.read_json("split")
        clips = {c.name for c in ds.train}
        if set(split.get("train", [])) | set(split.get("val", [])) != clips:
            where = split.get("data_root", "other data")
            raise UserError(f"--resume: {run.root} was trained on other clips ({where}); resume it with that --data")
    old = run.load_config()
    if checkpoint.fingerprint(old) != checkpoint.fingerprint(cfg):
        raise UserError(
            f"{run.root} holds a run made with another model/data config; resume with its config.yaml "
            f"(--config {run.config}) or train into a new directory"
        )


def _check_same_model(run: RunDir, cfg: Config) -> None:
    """``--stage prior`` trains on the codes of the run's VQ-VAE: the config must be the one it was made with,
    checked before config.yaml is written, so that a refusal leaves the run as it was."""
    if run.config.is_file() and checkpoint.fingerprint(run.load_config()) != checkpoint.fingerprint(cfg):
        raise UserError(
            f"{run.root} holds a VQ-VAE made with another model/data config; train the prior with its "
            f"config.yaml (--config {run.config}) or train both stages into a new directory"
        )


def _drop_stale(run: RunDir) -> None:
    """After the VQ-VAE changed, a prior trained on its old codes and a calibration of its old maps would be
    used as if they matched it: remove them, and say what makes them again."""
    stale = [p for p in (run.prior, run.prior_last, run.calibration, run.normalisation) if p.is_file()]
    for p in stale:
        p.unlink()
    if stale:
        print(
            f"note: the VQ-VAE changed, so {', '.join(p.name for p in stale)} (made with the old one) were "
            f"removed; train --stage prior and `edge-ad calibrate --run {run.root}` make them again"
        )


def training_data(data_root: str | Path) -> UCSDDataset:
    ds = open_ucsd(data_root)
    if not ds.train:
        raise UserError(f"{data_root} has no training clips: expected Train/TrainNNN folders of normal footage")
    return ds


def load_training_frames(
    cfg: Config, data_root: str | Path, run: RunDir | None = None, keep_split: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) tensors [N, C, H, W] float16 from the Train/ clips, split by clip. ``keep_split``:
    the run's recorded split, not one drawn again (a resumed run with another seed must not calibrate on
    clips it trained on)."""
    ds = training_data(data_root)
    check_frame_sizes(ds.train)
    if keep_split and run is not None and run.split.is_file():
        split = run.read_json("split")
        by_name = {c.name: c for c in ds.train}
        missing = sorted(n for n in [*split.get("train", []), *split.get("val", [])] if n not in by_name)
        if missing:
            raise UserError(f"{run.root} trained on clips {data_root} does not hold ({missing[0]}); give its --data")
        train_clips = [by_name[n] for n in split.get("train", [])]
        val_clips = [by_name[n] for n in split.get("val", [])]
    else:
        train_clips, val_clips = split_clips(ds.train, cfg.data.val_fraction, cfg.training.seed)
    if run is not None and is_main():
        split = {"train": [c.name for c in train_clips], "val": [c.name for c in val_clips]}
        run.write_json("split", {**split, "data_root": str(Path(data_root).resolve())})
    train = stack([clip_tensor(c, cfg) for c in train_clips], cfg.data.frame_stride, cfg.training.max_train_frames)
    val = stack([clip_tensor(c, cfg) for c in val_clips])
    if len(train) == 0:
        raise UserError(f"{data_root}: the training clips hold no frames")
    return train, val


def train(cfg: Config, data_root: str | Path, out: str | Path, stage: Stage = "all", resume: bool = False) -> RunDir:
    ds = training_data(data_root)  # before the run folder is made: a wrong --data leaves nothing behind
    run = RunDir(Path(out))
    if resume:  # before prepare(): a --resume of nothing leaves no folder behind
        _check_resume(run, cfg, ds)
    elif stage == "all" and (run.vqvae.exists() or run.prior.exists()):
        raise UserError(
            f"{run.root} already holds a trained run; pass --resume to continue it, or choose another --out"
        )
    elif stage == "prior":
        _check_same_model(run, cfg)
    device = pick_device(cfg.training.device)  # before prepare(): a device that is not there leaves nothing
    run.prepare()
    if cfg.training.num_threads:
        torch.set_num_threads(cfg.training.num_threads)
    seed_everything(cfg.training.seed)
    rank, world = init_distributed(device)
    if is_main():
        run.config.write_text(cfg.to_yaml())
    train_x, val_x = load_training_frames(cfg, data_root, run, keep_split=resume or stage == "prior")
    if is_main():
        print(f"training frames: {len(train_x)}  validation frames: {len(val_x)}  input {tuple(train_x.shape[1:])}")
    ctx = StageContext(cfg, run, device, rank, world, resume)
    if stage in ("vqvae", "all"):
        model, epochs_run = train_vqvae(ctx, train_x, val_x)
        if epochs_run and is_main():
            _drop_stale(run)
        ctx.resume = ctx.resume and not epochs_run  # a prior on the old codes is no start for the new ones
    else:
        run.require("vqvae")
        model = VQVAE.from_config(cfg).to(device)
        checkpoint.load(run.vqvae, model, cfg)
    if stage in ("prior", "all") and cfg.prior.enabled:
        train_codes = encode_codes(model, train_x, device)
        val_codes = encode_codes(model, val_x, device) if len(val_x) else train_codes[:0]
        train_prior(ctx, train_codes, val_codes)
    return run
