"""Checkpoints as safetensors (never pickle) with a JSON sidecar holding the epoch and config fingerprint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from edge_ad.config import Config
from edge_ad.errors import UserError


def fingerprint(cfg: Config) -> str:
    """Hash of what shapes the weights (data channels and size, model, prior): a resume must match it."""
    parts = {"data": cfg.data.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json")}
    parts["prior"] = cfg.prior.model_dump(mode="json")
    parts["data"].pop("val_fraction", None)
    parts["data"].pop("frame_stride", None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _flat_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, st in state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.contiguous()
            else:
                scalars["state"].setdefault(str(pid), {})[k] = v
    return tensors, scalars


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, st in scalars.get("state", {}).items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def save(path: Path, model: torch.nn.Module, meta: dict[str, Any], opt: torch.optim.Optimizer | None = None) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(meta)
    if opt is not None:
        opt_t, opt_s = _flat_optimizer(opt)
        tensors.update({k: v.cpu() for k, v in opt_t.items()})
        meta["optimizer"] = opt_s
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"edge_ad": json.dumps(meta)})
    tmp.replace(path)


def load(
    path: Path, model: torch.nn.Module, cfg: Config | None = None, opt: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (train first with `edge-ad train`)")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("edge_ad", "{}"))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise UserError(f"{path}: not a readable checkpoint ({e}); train again or restore the file") from None
    if cfg is not None and meta.get("fingerprint") not in (None, fingerprint(cfg)):
        raise UserError(
            f"{path} was made with another model/data config (fingerprint {meta.get('fingerprint')} vs "
            f"{fingerprint(cfg)}); use that run's config.yaml or train into a new directory"
        )
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} does not fit this model ({str(e).splitlines()[0]})") from None
    if opt is not None and "optimizer" in meta:
        _restore_optimizer(opt, tensors, meta["optimizer"])
    return meta
