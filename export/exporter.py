"""``edge-ad export``: a calibrated run -> a versioned bundle of ONNX graphs, checked before it is written."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edge_ad.data.preprocess import channel_names
from edge_ad.errors import UserError, make_dir
from edge_ad.export.bundle import MANIFEST, Bundle, load_bundle, write_manifest
from edge_ad.export.onnx_graphs import export_graph, graph_specs
from edge_ad.export.parity import check_parity
from edge_ad.scoring.calibrate import validation_frames
from edge_ad.scoring.load import load_pipeline
from edge_ad.training.rundir import RunDir

PRECISIONS = ("fp32", "fp16", "int8")
PARITY_FRAMES = 48


def _parity_frames(run: RunDir, cfg, data_root: str | Path | None) -> np.ndarray:
    if data_root is not None and not Path(data_root).is_dir():
        raise UserError(f"--data {data_root} is not a folder; give the data root {run.root} was trained on")
    root = data_root or (run.read_json("split").get("data_root") if run.split.is_file() else None)
    if root is None or not Path(root).exists():
        raise UserError(f"the parity check needs real frames: pass --data ROOT (the training data of {run.root})")
    x = validation_frames(run, cfg, root)
    keep = np.linspace(0, len(x) - 1, min(PARITY_FRAMES, len(x))).round().astype(int)
    return x[keep].astype(np.float32)


def _check_graph(path: Path, input_names: list[str]) -> list[str]:
    """TensorRT readiness; control flow counts as a problem too, since our graphs are meant to have none."""
    from edge_ad.export.opcheck import check_tensorrt_ready, control_flow_warnings

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return check_tensorrt_ready(model, expected_inputs=input_names) + control_flow_warnings(model)


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    batch: int | None = None,
    precision: str | None = None,
    data_root: str | Path | None = None,
    force: bool = False,
) -> Bundle:
    run = RunDir(Path(run_dir))
    cfg, pipeline, calib = load_pipeline(run.root)
    if calib is None:
        raise UserError(f"{run.root} is not calibrated; run `edge-ad calibrate --run {run.root} --data ROOT` first")
    precision = precision or cfg.export.precision
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    batch = batch or cfg.export.batch
    out = Path(out)
    _check_target(out, run, force)
    frames = _parity_frames(run, cfg, data_root)  # before the folder is touched: a bad --data leaves nothing behind
    make_dir(out, "bundle folder")
    for leftover in out.glob(f"{PARTIAL}*"):  # of an export that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    # Built inside --out: the same disk and the same permissions, and --out may be a mount point or ``.``.
    partial = out / f"{PARTIAL}{os.getpid()}"
    make_dir(partial, "bundle folder")
    try:
        _write_bundle(partial, cfg, pipeline, calib, frames, batch, precision)
        _move_in(partial, out)
    finally:  # a failed check or a Ctrl-C while writing leaves the old bundle as it was
        shutil.rmtree(partial, ignore_errors=True)
    return load_bundle(out)


# The hidden folder a new bundle is written to, inside --out, until every check has passed.
PARTIAL = ".partial-"


def _check_target(out: Path, run: RunDir, force: bool) -> None:
    """``--force`` replaces a bundle, nothing else: a mistyped ``--out`` must not delete a run or a dataset."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the bundle")
    here, run_root = out.resolve(), run.root.resolve()
    if here == run_root or here in run_root.parents:
        raise UserError(f"--out {out} is the run {run.root} or holds it; give the bundle a folder of its own")
    if not out.exists() or not any(not p.name.startswith(PARTIAL) for p in out.iterdir()):
        return
    if not force:
        raise UserError(f"{out} exists and is not empty; pass --force to replace it")
    if not (out / MANIFEST).is_file():
        raise UserError(
            f"{out} is not a bundle (no {MANIFEST}), so --force will not replace it; give another --out, "
            "or empty that folder yourself"
        )


def _move_in(partial: Path, out: Path) -> None:
    """The old manifest goes first and the new one comes last: a folder with a manifest holds a whole bundle,
    whenever an interruption comes (in between, the folder is refused as no bundle, never half-read)."""
    (out / MANIFEST).unlink(missing_ok=True)
    for old in out.iterdir():
        if old != partial:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for new in partial.iterdir():
        if new.name != MANIFEST:
            new.rename(out / new.name)
    (partial / MANIFEST).rename(out / MANIFEST)


def _write_bundle(out: Path, cfg, pipeline, calib: dict, frames: np.ndarray, batch: int, precision: str) -> None:
    example = torch.from_numpy(frames[:batch].copy())
    graphs: dict[str, str] = {}
    readiness: dict[str, list[str]] = {}
    for spec in graph_specs(pipeline, example):
        path = export_graph(spec, out, cfg.export.opset)
        graphs[spec.name] = path.name
        readiness[spec.name] = _check_graph(path, spec.input_names)
    problems = [f"{g}: {p}" for g, ps in readiness.items() for p in ps]
    if problems:
        raise UserError("graph is not TensorRT-ready: " + "; ".join(problems))
    parity = check_parity(pipeline, out, graphs, frames, cfg.export.parity_code_agreement, cfg.export.parity_map_atol)
    manifest: dict[str, Any] = {
        "name": cfg.name,
        "input": {
            "size": list(cfg.data.size),
            "grayscale": cfg.data.grayscale,
            "temporal_offsets": cfg.data.temporal_offsets,
            "channels": cfg.data.in_channels,
            "channel_names": channel_names(cfg.data.temporal_offsets, cfg.data.grayscale),
            "range": [0.0, 1.0],
            "fps": cfg.scoring.assumed_fps,  # the runtime scores a faster source at this rate
        },
        "outputs": {"anomaly_map": [1, *cfg.data.size], "frame_score": []},
        "calibration": calib,
        "graphs": graphs,
        "tensorrt_ready": True,
        "opset": cfg.export.opset,
        "batch": {"dynamic_axis": 0, "export_batch": batch, "max_batch": cfg.export.max_batch},
        "precision": precision,
        "parity": parity,
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "python": sys.version.split()[0],
        },
        "config": cfg.to_dict(),
    }
    write_manifest(out, manifest, sorted(graphs.values()))
