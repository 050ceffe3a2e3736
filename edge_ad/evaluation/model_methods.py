"""Our model as evaluation methods: from a training run (PyTorch) or from an exported bundle (ONNX Runtime).

A run yields its final map and, for comparison, each of its maps alone, or each map named by --compare-maps
alone (a second scorer over the same networks, calibrated on the same validation clips); the networks run once
per clip for all of them. A bundle yields the final map exactly as the runtime sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_ad.data.preprocess import model_channels

if TYPE_CHECKING:
    from edge_ad.scoring.scorer import AnomalyScorer

BATCH = 32


def _channels(frames: np.ndarray, size: tuple[int, int], grayscale: bool, offsets: list[int]) -> np.ndarray:
    return np.stack(list(model_channels(frames, size, grayscale, offsets))).astype(np.float32)


class RunMaps:
    """Runs a training run's pipeline over a clip once and keeps every map for the views below: the run's own
    final map, and each of its maps alone, or each compared map alone (``--compare-maps``)."""

    def __init__(
        self, run_dir: str | Path, compare: list[str] | None = None, data_root: str | Path | None = None
    ) -> None:
        """``compare``: also score these maps alone, each calibrated on the run's validation clips; the final
        map stays the run's own, calibration and threshold included."""
        import torch

        from edge_ad.scoring.load import load_pipeline

        self._torch = torch
        self.cfg, self.pipeline, self.calibration = load_pipeline(run_dir)
        if self.calibration is None:
            print(f"warning: {run_dir} is not calibrated: its maps are not normalised and it has no alert threshold, "
                  f"so no alert table (run `edge-ad calibrate --run {run_dir}`)")  # fmt: skip
        own = self.pipeline.scorer
        # the scorer of the maps shown alone, and their names: the compared maps, else the run's own (with several)
        self.alone = self._compared(Path(run_dir), compare, data_root) if compare else own
        self.views = list(self.alone.names) if compare or len(own.names) > 1 else []
        scorers = (own, self.alone)
        self.needs_prior = any(s.needs_prior for s in scorers)  # one prior pass serves both
        self._frames: np.ndarray | None = None  # held, not its id(): a freed array's id is reused
        self._out: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _compared(self, run_dir: Path, maps: list[str], data_root: str | Path | None) -> AnomalyScorer:
        """A second scorer over the same networks, weighting ``maps``, calibrated like the run's own."""
        from pydantic import ValidationError

        from edge_ad.config import Config
        from edge_ad.errors import UserError
        from edge_ad.scoring.calibrate import calibrate, validation_frames
        from edge_ad.scoring.scorer import PRIOR_MAPS, AnomalyPipeline, AnomalyScorer, base_map
        from edge_ad.training.rundir import RunDir

        run, p = RunDir(run_dir), self.pipeline
        try:  # the whole config again: a map's channels are checked against the data's (residual@motion)
            scoring = self.cfg.scoring.model_dump(mode="json")
            # each compared map normalised as the run normalises it, when the run weights it
            own = {m: mode for m, mode in scoring["normalise_maps"].items() if m in maps}
            scoring = {**scoring, "weights": {m: 1.0 for m in maps}, "normalise_maps": own}
            cfg = Config.model_validate({**self.cfg.to_dict(), "scoring": scoring})
        except ValidationError as e:
            raise UserError(f"--compare-maps: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        if p.prior is None and (need := [m for m in maps if base_map(m) in PRIOR_MAPS]):
            verb = "needs" if len(need) == 1 else "need"
            raise UserError(f"--compare-maps: {', '.join(need)} {verb} the prior, which {run_dir} does not have")
        root = run.read_json("split").get("data_root") if run.split.is_file() else None
        if not (isinstance(root, str) and Path(root).is_dir()):  # moved since training: eval's --data then
            root = data_root
        if root is None:
            raise UserError(f"{run_dir} does not say which data it was trained on; cannot calibrate the maps")
        scorer = AnomalyScorer(p.vqvae, p.prior, cfg)
        calibrate(AnomalyPipeline(p.vqvae, p.prior, scorer), cfg, validation_frames(run, cfg, root), cfg.training.seed)
        return scorer

    def compute(self, frames: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if frames is self._frames:
            return self._out
        torch, d, own, alone = self._torch, self.cfg.data, self.pipeline.scorer, self.alone
        x = _channels(frames, d.size, d.grayscale, d.temporal_offsets)
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        with torch.no_grad():
            for i in range(0, len(x), BATCH):
                xb = torch.from_numpy(x[i : i + BATCH])
                encoded = self.pipeline.encode(xb, with_logits=self.needs_prior)
                raw = own.raw_maps(xb, *encoded)
                fused = own.combine(raw)
                pairs = {"model": (own.outline(fused), own.frame_score(fused))}
                if self.views:
                    raw = raw if alone is own else alone.raw_maps(xb, *encoded)
                    for n in self.views:
                        # a map alone is scored at the reference area: the areas were standardised on the fusion
                        m = alone.single(raw, n)
                        pairs[n] = (alone.outline(m), alone.reference_score(m))
                for name, (m, score) in pairs.items():
                    parts.setdefault(name, []).append((m[:, 0].numpy(), score.numpy()))
        self._out = {
            k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in parts.items()
        }
        self._frames = frames
        return self._out

    def methods(self) -> list[RunView]:
        return [RunView(self, v) for v in ["model", *self.views]]


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
