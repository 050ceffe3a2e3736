"""Will TensorRT take this ONNX graph? A check that runs anywhere, before a GPU host ever sees the bundle.

Engines are built on the edge box, often far from where the model was exported; a graph TensorRT cannot
parse (an operator outside its list, opset 21, an int64 output, a dynamic spatial axis) should be refused
at export time with the reason, not discovered by a parser error on the camera host. The operator list is
``trt_supported_ops.txt`` (its header says where it comes from). ``onnx`` is imported lazily: this module
is part of the exporter, not of the runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from edge_ad.errors import UserError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

MIN_OPSET = 9
MAX_OPSET = 20
STANDARD_DOMAINS = ("", "ai.onnx")

# Sampling inside the graph: TensorRT ignores the seed, so the same frame would give different maps.
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
SEQUENCE_OPS = frozenset(
    {
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SplitToSequence",
        "ConcatFromSequence",
    }
)
# Parsed by TensorRT, but with restrictions (static trip counts, same-rank branches) and usually slow.
CONTROL_FLOW_OPS = frozenset({"Loop", "Scan", "If"})


@lru_cache(maxsize=1)
def supported_ops() -> frozenset[str]:
    """The operators in ``trt_supported_ops.txt`` (comments and blank lines skipped)."""
    text = resources.files("edge_ad.export").joinpath("trt_supported_ops.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def load_model(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf raises its own DecodeError; onnx wraps others
        raise UserError(f"{path} is not a readable ONNX file ({type(e).__name__}); export it again") from None


def check_tensorrt_ready(
    model: onnx.ModelProto | str | Path, expected_inputs: Iterable[str] | None = None
) -> list[str]:
    """Everything that would stop TensorRT 10/11 from building this graph as edge-ad runs it; [] = ready.

    ``expected_inputs`` are the inputs the graph is declared to take (e.g. ``frames``); any other graph
    input is a problem, since the backend feeds nothing else (a leftover mask or a training flag would
    otherwise be left unbound at run time).
    """
    m = load_model(model)
    problems = _opset_problems(m)
    problems += _operator_problems(m)
    problems += _io_problems(m, None if expected_inputs is None else set(expected_inputs))
    return problems


def control_flow_warnings(model: onnx.ModelProto | str | Path) -> list[str]:
    """Loop/Scan/If nodes: TensorRT parses them with restrictions, and they tend to be slow."""
    m = load_model(model)
    found = sorted({op for _, op in _all_ops(m) if op in CONTROL_FLOW_OPS})
    return [f"{op} node(s): TensorRT needs static trip counts and same-rank branches; prefer unrolling" for op in found]


def assert_tensorrt_ready(
    model: onnx.ModelProto | str | Path, expected_inputs: Iterable[str] | None = None, name: str | None = None
) -> None:
    """Raise one ``UserError`` listing every problem; log the control-flow warnings."""
    m = load_model(model)
    label = name or (str(model) if isinstance(model, (str, Path)) else (m.graph.name or "graph"))
    for warning in control_flow_warnings(m):
        log.warning("%s: %s", label, warning)
    problems = check_tensorrt_ready(m, expected_inputs)
    if problems:
        raise UserError(f"{label} is not ready for TensorRT: " + "; ".join(problems))


def _opset_problems(m: onnx.ModelProto) -> list[str]:
    problems = []
    for imp in m.opset_import:
        if imp.domain in STANDARD_DOMAINS:
            if imp.version > MAX_OPSET:
                problems.append(
                    f"opset {imp.version} is newer than TensorRT 10 parses (at most {MAX_OPSET}); "
                    f"export with export.opset <= {MAX_OPSET}"
                )
            elif imp.version < MIN_OPSET:
                problems.append(f"opset {imp.version} is older than TensorRT parses (at least {MIN_OPSET})")
    return problems


def _operator_problems(m: onnx.ModelProto) -> list[str]:
    supported = supported_ops()
    random_ops, sequence_ops, unknown, custom = set(), set(), set(), set()
    for domain, op in _all_ops(m):
        if domain not in STANDARD_DOMAINS:
            custom.add(f"{domain}::{op}")
        elif op in RANDOM_OPS:
            random_ops.add(op)
        elif op in SEQUENCE_OPS:
            sequence_ops.add(op)
        elif op not in supported:
            unknown.add(op)
    problems = []
    if random_ops:
        problems.append(
            f"random operator(s) {', '.join(sorted(random_ops))}: TensorRT ignores their seed, so maps are not "
            "reproducible; export in eval mode without sampling"
        )
    if sequence_ops:
        problems.append(f"sequence operator(s) {', '.join(sorted(sequence_ops))}: TensorRT has no sequence type")
    if unknown:
        problems.append(f"operator(s) not supported by TensorRT's ONNX parser: {', '.join(sorted(unknown))}")
    if custom:
        problems.append(f"custom operator(s) {', '.join(sorted(custom))}: TensorRT would need a plugin for each")
    return problems


def _all_ops(m: onnx.ModelProto) -> Iterator[tuple[str, str]]:
    """(domain, op_type) of every node, inside subgraphs (If/Loop bodies) and model-local functions too."""
    functions = {(f.domain, f.name): f for f in m.functions}
    seen: set[tuple[str, str]] = set()

    def walk(nodes: Iterable[onnx.NodeProto]) -> Iterator[tuple[str, str]]:
        for node in nodes:
            key = (node.domain, node.op_type)
            if key in functions:
                if key not in seen:
                    seen.add(key)
                    yield from walk(functions[key].node)
                continue
            yield node.domain, node.op_type
            for attr in node.attribute:
                if attr.HasField("g"):
                    yield from walk(attr.g.node)
                for g in attr.graphs:
                    yield from walk(g.node)

    yield from walk(m.graph.node)


def _io_problems(m: onnx.ModelProto, expected: set[str] | None) -> list[str]:
    import onnx

    try:
        # data_prop folds Shape->Reshape chains, which torch.onnx leaves as symbolic output dims
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # shape inference is a help here, never a requirement
        inferred = m
    initializers = {t.name for t in m.graph.initializer}
    inputs = [v for v in inferred.graph.input if v.name not in initializers]
    problems = []
    if expected is not None:
        extra = sorted(v.name for v in inputs if v.name not in expected)
        if extra:
            problems.append(
                f"unexpected graph input(s) {', '.join(extra)} (declared: {', '.join(sorted(expected)) or 'none'}); "
                "fold masks and flags into constants before export"
            )
    for kind, values in (("input", inputs), ("output", list(inferred.graph.output))):
        for v in values:
            problems += _value_problems(kind, v)
    return problems


def _value_problems(kind: str, v: onnx.ValueInfoProto) -> list[str]:
    import onnx

    problems = []
    if not v.type.HasField("tensor_type"):
        return [f"{kind} '{v.name}' is not a tensor"]
    t = v.type.tensor_type
    if t.elem_type == onnx.TensorProto.INT64:
        problems.append(f"{kind} '{v.name}' is int64; make it int32 (cast in the model before export)")
    if not t.HasField("shape"):
        return problems + [f"{kind} '{v.name}' has no known shape; TensorRT needs static non-batch axes"]
    dynamic = [str(i) for i, d in enumerate(t.shape.dim) if i > 0 and not (d.HasField("dim_value") and d.dim_value > 0)]
    if dynamic:
        problems.append(
            f"{kind} '{v.name}' has dynamic axis {', '.join(dynamic)}; only the batch axis (0) may be dynamic"
        )
    return problems
