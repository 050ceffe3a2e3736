"""The backend contract: a batch of preprocessed frames in, anomaly maps and frame scores out.

The pipeline only talks to this interface, so the TensorRT path (which cannot run on a CPU host) and the
ONNX Runtime path are interchangeable and everything around them is tested on the CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_ad.errors import UserError

if TYPE_CHECKING:
    from edge_ad.export.bundle import Bundle

BACKENDS = ("onnxruntime", "tensorrt")

# Tensor names shared by the exporter and every backend.
INPUT = "frames"
MAP = "anomaly_map"
SCORE = "frame_score"


@dataclass
class InferenceResult:
    maps: np.ndarray  # float32 [B, H, W]
    scores: np.ndarray  # float32 [B]


class Backend(ABC):
    name: str = "backend"
    max_batch: int = 1

    @abstractmethod
    def infer(self, frames: np.ndarray) -> InferenceResult:
        """``frames`` float32 [B, C, H, W] with B <= max_batch, preprocessed as the bundle's manifest says."""

    def close(self) -> None:
        """Release sessions, engines and device buffers (nothing to release by default)."""
        return None


def create_backend(kind: str, bundle: Bundle, **options: object) -> Backend:
    """Build a backend by name, importing its module only when asked (TensorRT needs pycuda and a GPU)."""
    if kind == "onnxruntime":
        from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, **options)
    if kind == "tensorrt":
        from edge_ad.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(bundle, **options)
    raise UserError(f"unknown backend '{kind}'; choose one of: {', '.join(BACKENDS)}")
