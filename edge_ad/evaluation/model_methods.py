"""Our model as evaluation methods: from a training run (PyTorch) or from an exported bundle (ONNX Runtime).

A run yields the final map and, for comparison, each of its maps alone (SSIM+AM, NLL, restoration), computed
in one pass per clip and shared by the views. A bundle yields the final map exactly as the runtime sees it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_ad.data.preprocess import model_channels

BATCH = 32


def _channels(frames: np.ndarray, size: tuple[int, int], grayscale: bool, offsets: list[int]) -> np.ndarray:
    return np.stack(list(model_channels(frames, size, grayscale, offsets))).astype(np.float32)


class RunMaps:
    """Runs a training run's pipeline over a clip once and keeps every map for the views below."""

    def __init__(self, run_dir: str | Path, compare: list[str] | None = None) -> None:
        """``compare``: score these maps side by side (each calibrated on the run's validation clips)."""
        import torch

        from edge_ad.scoring.load import load_pipeline

        self._torch = torch
        self.cfg, self.pipeline, self.calibration = load_pipeline(run_dir)
        if compare:
            self._recalibrate(Path(run_dir), compare)
        self.names = list(self.pipeline.scorer.names)
        self._frames: np.ndarray | None = None  # held, not its id(): a freed array's id is reused
        self._out: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _recalibrate(self, run_dir: Path, maps: list[str]) -> None:
        from pydantic import ValidationError

        from edge_ad.errors import UserError
        from edge_ad.scoring.calibrate import calibrate, validation_frames
        from edge_ad.scoring.scorer import AnomalyScorer
        from edge_ad.training.rundir import RunDir

        run = RunDir(run_dir)
        try:
            self.cfg.scoring.weights = {m: 1.0 for m in maps}
        except ValidationError as e:
            raise UserError(f"--compare-maps: {e.errors()[0]['msg']}") from None
        p = self.pipeline
        p.scorer = AnomalyScorer(p.vqvae, p.prior, self.cfg)
        root = run.read_json("split")["data_root"] if run.split.is_file() else None
        if root is None:
            raise UserError(f"{run_dir} does not say which data it was trained on; cannot calibrate the maps")
        self.calibration = calibrate(p, self.cfg, validation_frames(run, self.cfg, root), self.cfg.training.seed)

    def compute(self, frames: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if frames is self._frames:
            return self._out
        torch, d, scorer = self._torch, self.cfg.data, self.pipeline.scorer
        x = _channels(frames, d.size, d.grayscale, d.temporal_offsets)
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        with torch.no_grad():
            for i in range(0, len(x), BATCH):
                xb = torch.from_numpy(x[i : i + BATCH])
                raw = self.pipeline.raw_maps(xb)
                views = {"model": scorer.combine(raw)}
                if len(self.names) > 1:
                    views.update({n: scorer.single(raw, n) for n in self.names})
                for name, m in views.items():
                    # a map alone is scored at the reference area: the areas were standardised on the fusion
                    score = scorer.frame_score(m) if name == "model" else scorer.reference_score(m)
                    pair = (scorer.outline(m)[:, 0].numpy(), score.numpy())
                    parts.setdefault(name, []).append(pair)
        self._out = {
            k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in parts.items()
        }
        self._frames = frames
        return self._out

    def methods(self) -> list[RunView]:
        views = ["model"] + (self.names if len(self.names) > 1 else [])
        return [RunView(self, v) for v in views]


class RunView:
    def __init__(self, maps: RunMaps, view: str) -> None:
        self.maps, self.view = maps, view
        self.name = "edge-ad" if view == "model" else f"edge-ad:{view}"
        calib = maps.calibration if view == "model" else None  # the alert threshold is the fused score's
        self.alert_threshold: float | None = calib["threshold"] if calib else None

    def reset(self) -> None:
        """Every clip is scored whole, with a fresh frame history; nothing carries over."""

    def score_clip(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.maps.compute(frames)[self.view]


class BundleMethod:
    """The exported fused graph through ONNX Runtime: what `edge-ad run` computes, frame for frame."""

    name = "edge-ad (bundle)"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        from edge_ad.export.bundle import load_bundle

        self.bundle = load_bundle(bundle_dir)
        self.alert_threshold = self.bundle.threshold
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.bundle.graph("pipeline")), opts, providers=["CPUExecutionProvider"]
        )

    def reset(self) -> None:
        """Clips are scored whole; the frame history restarts with each."""

    def score_clip(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = self.bundle
        x = _channels(frames, b.input_size, b.grayscale, b.temporal_offsets)
        maps, scores = [], []
        for i in range(0, len(x), BATCH):
            m, s = self.session.run(None, {"frames": x[i : i + BATCH]})
            maps.append(m[:, 0])
            scores.append(s)
        return np.concatenate(maps), np.concatenate(scores)
