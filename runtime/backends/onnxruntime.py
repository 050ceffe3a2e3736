"""The ONNX Runtime backend: runs the bundle's fused ``pipeline`` graph (frames -> anomaly map, frame score).

CPU by default, tuned for small edge boxes: all graph optimisations, one inter-op thread (the graph is a
chain) and intra-op threads = the cores. CUDA or TensorRT execution providers are used when asked for and
present in the installed onnxruntime build.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from edge_ad.errors import UserError
from edge_ad.export.bundle import Bundle
from edge_ad.runtime.backends.base import INPUT, MAP, SCORE, Backend, InferenceResult

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


def resolve_providers(names: Sequence[str] | None) -> list[str]:
    """Provider names (short aliases allowed) in order of preference, refusing ones this build lacks."""
    if not names:
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    chosen = [PROVIDER_ALIASES.get(n.lower(), n) for n in names]
    missing = [n for n in chosen if n not in available]
    if missing:
        raise UserError(
            f"ONNX Runtime provider(s) {', '.join(missing)} not available in this onnxruntime build "
            f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT"
        )
    return chosen + ([] if "CPUExecutionProvider" in chosen else ["CPUExecutionProvider"])


def session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    # Idle ORT threads spin by default; on a two-core box that steals the capture and output threads' CPU.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: warnings about unused initialisers are not the user's business
    return opts


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        max_batch: int = 8,
    ):
        path = bundle.graph("pipeline")
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options(threads), providers=resolve_providers(providers)
            )
        except UserError:
            raise
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{path}: not a usable ONNX graph ({first[:200]}); export the bundle again") from None
        self.providers = self.session.get_providers()
        self._check_io(bundle, path)
        graph_batch = self.session.get_inputs()[0].shape[0]
        self._fixed_batch = graph_batch if isinstance(graph_batch, int) and graph_batch > 0 else None
        self.max_batch = min(max_batch, self._fixed_batch) if self._fixed_batch else max_batch
        self._input_shape = (bundle.channels, *bundle.input_size)

    def _check_io(self, bundle: Bundle, path: os.PathLike) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if INPUT not in inputs or not {MAP, SCORE} <= outputs:
            raise UserError(
                f"{path}: expected input '{INPUT}' and outputs '{MAP}', '{SCORE}', found {sorted(inputs)} -> "
                f"{sorted(outputs)}; export the bundle again"
            )
        want = [bundle.channels, *bundle.input_size]
        have = inputs[INPUT].shape[1:]
        if any(isinstance(h, int) and h != w for h, w in zip(have, want, strict=False)):
            raise UserError(f"{path}: the graph takes {have}, the manifest says {want}; the bundle is inconsistent")

    def infer(self, frames: np.ndarray) -> InferenceResult:
        x = np.ascontiguousarray(frames, dtype=np.float32)
        if x.shape[1:] != self._input_shape:
            raise ValueError(f"frames of shape {x.shape[1:]}, the bundle takes {self._input_shape}")
        step = self._fixed_batch or len(x)
        maps, scores = [], []
        for i in range(0, len(x), step):
            chunk = x[i : i + step]
            n = len(chunk)
            if n < step:  # a graph exported with a fixed batch: pad the last chunk, keep the real rows
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), np.float32)])
            amap, score = self.session.run([MAP, SCORE], {INPUT: chunk})
            maps.append(amap.reshape(amap.shape[0], *amap.shape[-2:])[:n])
            scores.append(score.reshape(-1)[:n])
        return InferenceResult(
            maps=np.concatenate(maps).astype(np.float32, copy=False),
            scores=np.concatenate(scores).astype(np.float32, copy=False),
        )

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
