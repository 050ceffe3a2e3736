"""The TensorRT backend: the bundle's engines chained on one CUDA stream, device to device.

Encoder -> quantizer -> prior -> scorer run back to back on one stream; every intermediate tensor (z_e,
codes, distance, logits, ...) lives in a device buffer allocated once for the largest batch and is never
copied to the host. Only the input frames go up and only the anomaly maps and frame scores come back,
through pinned host buffers. Engines are looked up by a key of TensorRT version and GPU, so a bundle from
another box says to rebuild instead of failing inside deserialization. tensorrt and pycuda are imported by
the constructor only; no torch, no onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_ad.errors import UserError
from edge_ad.export.tensorrt.build import chain_graphs
from edge_ad.export.tensorrt.cache import REBUILD_HINT, resolve_engine
from edge_ad.export.tensorrt.device import compute_capability, require_tensorrt_gpu
from edge_ad.runtime.backends.base import INPUT, MAP, SCORE, Backend, InferenceResult

if TYPE_CHECKING:
    from edge_ad.export.bundle import Bundle


@dataclass
class _Stage:
    graph: str
    engine: Any
    context: Any
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Tensor:
    shape: tuple[int, ...]  # without the batch axis
    dtype: np.dtype

    def nbytes(self, batch: int) -> int:
        return int(batch * np.prod(self.shape, dtype=np.int64) * self.dtype.itemsize)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle: Bundle, device: int = 0, max_batch: int | None = None) -> None:
        self._trt, self._cuda = require_tensorrt_gpu(device)
        self._stages: list[_Stage] = []
        self._tensors: dict[str, _Tensor] = {}
        self._device_buffers: dict[str, Any] = {}
        self._batch: int | None = None
        self._ctx = self._cuda.Device(device).retain_primary_context()
        self._ctx.push()
        try:
            self._load(bundle, device, max_batch)
            self._allocate(bundle)
        except BaseException:
            self._free()
            self._cuda.Context.pop()
            self._ctx.detach()
            self._ctx = None
            raise
        self._cuda.Context.pop()

    def _load(self, bundle: Bundle, device: int, max_batch: int | None) -> None:
        trt = self._trt
        version, cc = trt.__version__, compute_capability(self._cuda, device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        built_for = []
        for graph in chain_graphs(bundle):
            path, entry = resolve_engine(bundle, graph, version, cc)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise UserError(f"TensorRT could not deserialize {path.name} from {bundle.path}; {REBUILD_HINT}")
            built_for.append(int(entry["max_batch"]))
            stage = _Stage(graph, engine, None)
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (stage.inputs if is_input else stage.outputs).append(name)
            self._stages.append(stage)
        limit = min(built_for)
        if max_batch is not None and not 1 <= max_batch <= limit:
            raise UserError(
                f"max batch {max_batch} is outside what the engines in {bundle.path} were built for (1..{limit}); "
                "lower runtime.max_batch or rebuild with `edge-ad export --engines --max-batch N`"
            )
        self.max_batch = limit if max_batch is None else max_batch

    def _describe(self, engine: Any, name: str) -> _Tensor:
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        if not shape or shape[0] != -1 or any(d < 1 for d in shape[1:]):
            raise UserError(f"engine tensor '{name}' has shape {list(shape)}; expected a dynamic batch axis only")
        return _Tensor(shape[1:], np.dtype(self._trt.nptype(engine.get_tensor_dtype(name))))

    def _allocate(self, bundle: Bundle) -> None:
        """One device buffer per tensor name, shared by its producer and its consumers, sized for max batch."""
        cuda = self._cuda
        frames = _Tensor((bundle.channels, *bundle.input_size), np.dtype(np.float32))
        self._tensors[INPUT] = frames
        for stage in self._stages:
            for name in stage.inputs:
                have = self._tensors.get(name)
                if have is None:
                    raise UserError(f"the {stage.graph} engine needs '{name}', which no earlier engine produces")
                want = self._describe(stage.engine, name)
                if want != have:
                    raise UserError(
                        f"the {stage.graph} engine takes '{name}' as {want.dtype}{list(want.shape)} but gets "
                        f"{have.dtype}{list(have.shape)}; export the bundle and its engines again"
                    )
            for name in stage.outputs:
                if name in self._tensors:
                    raise UserError(f"'{name}' is produced twice in the engine chain; export the bundle again")
                self._tensors[name] = self._describe(stage.engine, name)
        for name, shapes in ((MAP, [(1, *bundle.input_size)]), (SCORE, [(), (1,)])):
            if name not in self._tensors:
                raise UserError(f"no engine in {bundle.path} produces '{name}'; export the bundle again")
            if self._tensors[name].shape not in shapes:
                raise UserError(
                    f"'{name}' has shape [B, {', '.join(map(str, self._tensors[name].shape))}], expected "
                    f"[B{''.join(', ' + str(d) for d in shapes[0])}]; export the bundle again"
                )
        for name, tensor in self._tensors.items():
            self._device_buffers[name] = cuda.mem_alloc(tensor.nbytes(self.max_batch))
        for stage in self._stages:
            stage.context = stage.engine.create_execution_context()
            for name in (*stage.inputs, *stage.outputs):
                stage.context.set_tensor_address(name, int(self._device_buffers[name]))
        self._host_frames = self._pinned(INPUT)
        self._host_map = self._pinned(MAP)
        self._host_score = self._pinned(SCORE)
        self._stream = cuda.Stream()

    def _pinned(self, name: str) -> np.ndarray:
        t = self._tensors[name]
        return self._cuda.pagelocked_empty((self.max_batch, *t.shape), t.dtype)

    def _set_batch(self, batch: int) -> None:
        for stage in self._stages:
            for name in stage.inputs:
                if not stage.context.set_input_shape(name, (batch, *self._tensors[name].shape)):
                    raise ValueError(f"the {stage.graph} engine refused batch {batch} for '{name}'")
        self._batch = batch

    def infer(self, frames: np.ndarray) -> InferenceResult:
        if self._ctx is None:
            raise RuntimeError("TensorRTBackend is closed")
        x = np.asarray(frames)
        shape = self._tensors[INPUT].shape
        if x.ndim != 4 or tuple(x.shape[1:]) != shape or not 1 <= len(x) <= self.max_batch:
            raise ValueError(f"frames must be [1..{self.max_batch}, {', '.join(map(str, shape))}], got {list(x.shape)}")
        b = len(x)
        cuda = self._cuda
        self._ctx.push()
        try:
            if b != self._batch:
                self._set_batch(b)
            np.copyto(self._host_frames[:b], x, casting="same_kind")
            cuda.memcpy_htod_async(self._device_buffers[INPUT], self._host_frames[:b], self._stream)
            for stage in self._stages:
                if not stage.context.execute_async_v3(self._stream.handle):
                    raise RuntimeError(f"TensorRT failed to enqueue the {stage.graph} engine")
            cuda.memcpy_dtoh_async(self._host_map[:b], self._device_buffers[MAP], self._stream)
            cuda.memcpy_dtoh_async(self._host_score[:b], self._device_buffers[SCORE], self._stream)
            self._stream.synchronize()
        finally:
            cuda.Context.pop()
        h, w = shape[1:]
        maps = self._host_map[:b].reshape(b, h, w).astype(np.float32, copy=True)
        scores = self._host_score[:b].reshape(b).astype(np.float32, copy=True)
        return InferenceResult(maps=maps, scores=scores)

    def _free(self) -> None:
        for buf in self._device_buffers.values():
            buf.free()
        self._device_buffers.clear()
        for stage in self._stages:
            stage.context = None
            stage.engine = None
        self._stages.clear()

    def close(self) -> None:
        if self._ctx is None:
            return
        self._ctx.push()
        try:
            self._free()
        finally:
            self._cuda.Context.pop()
            self._ctx.detach()
            self._ctx = None
