"""Building TensorRT engines from the bundle's graphs, on the GPU host that will run them.

The chain the TensorRT backend runs is four graphs: encoder (frames -> z_e), quantizer (z_e -> codes,
quantized, distance), prior (codes -> logits) and scorer (frames, codes, distance, logits -> anomaly_map,
frame_score). Each becomes one engine with a batch optimisation profile; finished engines go into the
engine cache under a key of graph checksum, TensorRT version, GPU and precision, and into the manifest.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import numpy as np

from edge_ad.errors import UserError
from edge_ad.export.bundle import Bundle, load_bundle, sha256_file
from edge_ad.export.opcheck import assert_tensorrt_ready
from edge_ad.export.tensorrt.cache import (
    ENGINES_DIR,
    EngineCache,
    EngineRecord,
    engine_cache_key,
    engine_filename,
    register_engines,
)
from edge_ad.export.tensorrt.device import compute_capability, primary_context, require_tensorrt_gpu, trt_major
from edge_ad.export.tensorrt.precision import (
    PrecisionPlan,
    check_precision,
    engine_precision,
    has_fp16,
    has_qdq,
    precision_plan,
    prepare_onnx,
)

log = logging.getLogger(__name__)

CHAIN: tuple[str, ...] = ("encoder", "quantizer", "prior", "scorer")
REQUIRED: tuple[str, ...] = ("encoder", "quantizer", "scorer")
GRAPH_INPUTS: dict[str, frozenset[str]] = {
    "encoder": frozenset({"frames"}),
    "quantizer": frozenset({"z_e"}),
    "prior": frozenset({"codes"}),
    "scorer": frozenset({"frames", "codes", "distance", "logits"}),
}
DEFAULT_WORKSPACE = 1 << 30
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class EngineSpec:
    """One engine to build: which graph, in what precision, for which batch sizes."""

    onnx_path: Path
    precision: str = "fp32"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_bytes: int = DEFAULT_WORKSPACE
    timing_cache_path: Path | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_batches(self.min_batch, self.opt_batch, self.max_batch)
        if self.workspace_bytes < 1 << 20:
            raise UserError(f"workspace of {self.workspace_bytes} bytes is too small; give at least 1 MiB")


def check_batches(min_b: int, opt_b: int, max_b: int) -> None:
    if not 1 <= min_b <= opt_b <= max_b:
        raise UserError(f"batch sizes must satisfy 1 <= min <= opt <= max, got {min_b}, {opt_b}, {max_b}")


def optimization_profile_shapes(
    input_shape_without_batch: Sequence[int], min_b: int, opt_b: int, max_b: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes of one input for a profile that varies only the batch axis."""
    check_batches(min_b, opt_b, max_b)
    rest = tuple(int(d) for d in input_shape_without_batch)
    if any(d < 1 for d in rest):
        raise UserError(f"input shape {list(rest)} has a dynamic axis besides the batch; export static sizes")
    return (min_b, *rest), (opt_b, *rest), (max_b, *rest)


def build_engine(spec: EngineSpec, device: int = 0) -> bytes:
    """Parse ``spec.onnx_path`` and build a serialized engine; precision handling follows ``precision_plan``.

    ``spec.onnx_path`` must already be in the form the plan asks for (an fp16 graph on TensorRT 11, a Q/DQ
    graph for int8): ``prepare_onnx`` makes it.
    """
    trt, cuda = require_tensorrt_gpu(device)
    plan = precision_plan(spec.precision, trt_major(trt.__version__))
    _check_onnx_form(spec.onnx_path, plan)
    with primary_context(cuda, device):
        return _build(trt, spec, plan)


def _build(trt: ModuleType, spec: EngineSpec, plan: PrecisionPlan) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx_path)):
        errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        first = errors[0].replace("\n", " ") if errors else "no details"
        raise UserError(f"TensorRT could not parse {spec.onnx_path.name}: {first}{more}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    _apply_flags(trt, config, plan)
    config.add_optimization_profile(_batch_profile(builder, network, spec))
    timing_cache = _load_timing_cache(config, spec.timing_cache_path)
    plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        raise UserError(f"TensorRT failed to build an engine from {spec.onnx_path.name} (see its log above)")
    if spec.timing_cache_path is not None and timing_cache is not None:
        spec.timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
        spec.timing_cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(plan_bytes))


def _check_onnx_form(path: Path, plan: PrecisionPlan) -> None:
    if plan.onnx_form == "qdq" and not has_qdq(path):
        raise UserError(f"{path.name} has no Q/DQ nodes; INT8 engines need an explicitly quantized graph")
    if plan.onnx_form == "fp16" and not has_fp16(path):
        raise UserError(
            f"{path.name} is an fp32 graph; TensorRT {plan.trt_major} builds fp16 only from an fp16-converted "
            "graph (prepare_onnx makes one)"
        )


def _network_flags(trt: ModuleType, plan: PrecisionPlan) -> int:
    """0 on TensorRT 10 (explicit batch is the default); STRONGLY_TYPED when the graph carries the types."""
    if not plan.strongly_typed:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)  # TensorRT 11 keeps the flag but always types strongly


def _apply_flags(trt: ModuleType, config: object, plan: PrecisionPlan) -> None:
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is not None:
            config.clear_flag(flag)


def _batch_profile(builder: object, network: object, spec: EngineSpec) -> object:
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if shape[0] != -1:
            raise UserError(
                f"{spec.onnx_path.name}: input '{tensor.name}' has a fixed batch of {shape[0]}; "
                "export it with a dynamic batch axis"
            )
        profile.set_shape(
            tensor.name, *optimization_profile_shapes(shape[1:], spec.min_batch, spec.opt_batch, spec.max_batch)
        )
    return profile


def _load_timing_cache(config: object, path: Path | None) -> object | None:
    """Reuse kernel timings from earlier builds on this GPU; a missing or unreadable file starts fresh."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # a corrupt cache file only costs time
        log.warning("ignoring unreadable TensorRT timing cache %s", path)
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def chain_graphs(bundle: Bundle) -> list[str]:
    """The chain's graphs present in the bundle, in run order (the prior is optional)."""
    graphs = bundle.manifest.get("graphs", {})
    missing = [g for g in REQUIRED if g not in graphs]
    if missing:
        raise UserError(
            f"bundle {bundle.path} has no {', '.join(missing)} graph(s), which the TensorRT chain needs; "
            "export the bundle again with this edge-ad"
        )
    return [g for g in CHAIN if g in graphs]


def calibration_feeds(bundle: Bundle, graph: str, frames: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Inputs of ``graph`` for INT8 calibration: ``frames`` run through the graphs before it with ONNX Runtime."""
    import onnxruntime as ort

    frames = np.ascontiguousarray(frames, dtype=np.float32)
    expected = (bundle.channels, *bundle.input_size)
    if frames.ndim != 4 or frames.shape[1:] != expected or len(frames) == 0:
        raise UserError(
            f"calibration frames must be float32 [N, {expected[0]}, {expected[1]}, {expected[2]}] as the bundle "
            f"preprocesses them, got {list(frames.shape)}"
        )
    upstream = CHAIN[: CHAIN.index(graph)]
    sessions = {
        g: ort.InferenceSession(str(bundle.graph(g)), providers=["CPUExecutionProvider"])
        for g in (*upstream, graph)
        if g in bundle.manifest["graphs"]
    }
    wanted = [i.name for i in sessions[graph].get_inputs()]
    feeds = []
    for start in range(0, len(frames), CALIBRATION_BATCH):
        values: dict[str, np.ndarray] = {"frames": frames[start : start + CALIBRATION_BATCH]}
        for g in upstream:
            if g in sessions:
                sess = sessions[g]
                outs = sess.run(None, {i.name: values[i.name] for i in sess.get_inputs()})
                values.update(zip([o.name for o in sess.get_outputs()], outs, strict=True))
        feeds.append({name: values[name] for name in wanted})
    return feeds


def build_bundle_engines(
    bundle_dir: str | Path,
    precision: str,
    max_batch: int,
    *,
    opt_batch: int | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE,
    calibration: np.ndarray | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    device: int = 0,
) -> dict[str, EngineRecord]:
    """Build (or reuse from the cache) one engine per chain graph and register them in the bundle.

    ``calibration`` (float32 [N, C, H, W] normal frames, preprocessed) is needed for ``int8`` unless the
    graphs are already explicitly quantized. ``cache_dir`` defaults to the bundle's ``engines/``; a shared
    directory lets re-exported bundles with unchanged graphs skip the build.
    """
    check_precision(precision)
    opt = max_batch if opt_batch is None else opt_batch
    check_batches(1, opt, max_batch)
    root = Path(bundle_dir)
    bundle = load_bundle(root)
    graphs = chain_graphs(bundle)
    trt, cuda = require_tensorrt_gpu(device)
    version, cc = trt.__version__, compute_capability(cuda, device)
    major = trt_major(version)
    cache = EngineCache(Path(cache_dir) if cache_dir is not None else root / ENGINES_DIR)
    timing = cache.dir / f"timing-sm{cc.replace('.', '')}-trt{version}.cache"
    records: dict[str, EngineRecord] = {}
    with tempfile.TemporaryDirectory(prefix="edge-ad-trt-") as tmp:
        for graph in graphs:
            src = bundle.graph(graph)
            assert_tensorrt_ready(src, GRAPH_INPUTS[graph], name=f"{graph} graph ({src.name})")
            prec = engine_precision(graph, precision)
            sha = sha256_file(src)
            key = engine_cache_key(sha, version, cc, prec, max_batch, opt)
            cached = None if rebuild else cache.lookup(key)
            if cached is not None:
                log.info("%s: reusing engine %s", graph, cached.file)
                records[graph] = cached
                continue
            plan = precision_plan(prec, major)
            calibrate = plan.onnx_form == "qdq" and calibration is not None and not has_qdq(src)
            feeds = calibration_feeds(bundle, graph, calibration) if calibrate else None
            onnx_path = prepare_onnx(src, Path(tmp), plan, feeds)
            log.info("%s: building %s engine (%s), batch 1..%d opt %d", graph, prec, plan.summary, max_batch, opt)
            spec = EngineSpec(onnx_path, prec, 1, opt, max_batch, workspace_bytes, timing)
            record = EngineRecord(
                graph=graph,
                file=engine_filename(graph, key),
                key=key,
                onnx_sha256=sha,
                trt_version=version,
                compute_capability=cc,
                precision=prec,
                min_batch=1,
                opt_batch=opt,
                max_batch=max_batch,
                built=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                host=platform.node(),
            )
            cache.store(record, build_engine(spec, device))
            records[graph] = record
    register_engines(root, records, cache.dir)
    return records
