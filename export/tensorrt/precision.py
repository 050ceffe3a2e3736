"""Reduced precision per TensorRT version: builder flags on TensorRT 10, typed ONNX graphs on TensorRT 11.

TensorRT 10 takes an fp32 graph and the FP16/INT8 builder flags and picks kernels itself (weak typing).
TensorRT 11 removed those flags: networks are strongly typed, so the precision must already be in the ONNX
graph, i.e. an fp16-converted graph (onnxconverter-common, pure Python, I/O kept fp32) or, for INT8, an
explicitly quantized graph with QuantizeLinear/DequantizeLinear (Q/DQ) pairs, on both versions.

Where reduced precision goes: only the encoder and the prior (the conv stacks, most of the FLOPs). The
quantizer (an argmin over code distances: one flipped code changes the map) and the scorer (decoder, SSIM
statistics E[x^2] - E[x]^2 that cancel badly in fp16, NLL, smoothing, frame score) always build in fp32.
Inside a graph that is quantized, nodes whose names contain "decoder" or "ssim" (torch.onnx names nodes by
module path, e.g. ``/decoder/res1/conv/Conv``) are excluded too, and only Conv, ConvTranspose, Gemm and
MatMul with constant weights get Q/DQ pairs: softmax, attention products and elementwise math stay float.
The layers at a graph's edges stay float as well (``boundary_nodes``): the first reads the frame and its
motion difference in one tensor, whose single int8 scale leaves the small motion values a few steps; the last
writes the vectors the quantizer's argmin compares. With both quantized, a tiny model's int8 encoder kept 45 %
of its codes on real footage; with both float, 96 % (tests/test_tensorrt.py measures it).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from edge_ad.errors import UserError
from edge_ad.export.opcheck import load_model

if TYPE_CHECKING:
    import onnx

Precision = Literal["fp32", "fp16", "int8"]
OnnxForm = Literal["as_exported", "fp16", "qdq"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
REDUCED_PRECISION_GRAPHS = frozenset({"encoder", "prior"})
QDQ_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
KEEP_FLOAT_PATTERNS: tuple[str, ...] = ("decoder", "ssim")
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Ops that pass values through unchanged (type, shape or order only): boundary_nodes walks through them.
LAYOUT_OPS = frozenset(
    {"Cast", "Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Pad", "Slice", "Concat", "Split"}
)


@dataclass(frozen=True)
class PrecisionPlan:
    """How to get ``precision`` out of a given TensorRT major version."""

    precision: str
    trt_major: int
    builder_flags: tuple[str, ...]  # trt.BuilderFlag members to set (TensorRT 10 only)
    clear_flags: tuple[str, ...]  # trt.BuilderFlag members to clear when the version has them
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    onnx_form: OnnxForm  # the graph TensorRT must parse
    summary: str


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")


def precision_plan(precision: str, trt_major: int) -> PrecisionPlan:
    """The branch between TensorRT 10 (weakly typed + flags) and 11 (strongly typed, typed graph)."""
    check_precision(precision)
    if trt_major < 10:
        raise UserError(f"TensorRT {trt_major} is not supported; edge-ad builds engines with TensorRT 10 or 11")
    # TF32 is on by default and rounds fp32 convolutions to a 10-bit mantissa: "fp32" means fp32 here.
    no_tf32 = ("TF32",) if precision == "fp32" else ()
    if trt_major == 10:
        if precision == "fp32":
            return PrecisionPlan(precision, 10, (), no_tf32, False, "as_exported", "fp32 graph, TF32 off")
        if precision == "fp16":
            return PrecisionPlan(precision, 10, ("FP16",), (), False, "as_exported", "fp32 graph + FP16 flag")
        return PrecisionPlan(precision, 10, ("INT8",), (), False, "qdq", "Q/DQ graph + INT8 flag")
    if precision == "fp32":
        return PrecisionPlan(precision, trt_major, (), no_tf32, True, "as_exported", "strongly typed fp32 graph")
    if precision == "fp16":
        return PrecisionPlan(precision, trt_major, (), (), True, "fp16", "strongly typed fp16-converted graph")
    return PrecisionPlan(precision, trt_major, (), (), True, "qdq", "strongly typed Q/DQ graph")


def engine_precision(graph: str, requested: str) -> str:
    """The precision one graph is built in when the bundle asks for ``requested`` (see the module doc)."""
    check_precision(requested)
    return requested if graph in REDUCED_PRECISION_GRAPHS else "fp32"


def has_qdq(model: onnx.ModelProto | str | Path) -> bool:
    return any(n.op_type in QDQ_OPS for n in load_model(model).graph.node)


def has_fp16(model: onnx.ModelProto | str | Path) -> bool:
    """True when the graph computes in fp16 somewhere (fp16 weights or a cast to fp16)."""
    import onnx

    m = load_model(model)
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer):
        return True
    for node in m.graph.node:
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to == onnx.TensorProto.FLOAT16:
                return True
    return False


def boundary_nodes(model: onnx.ModelProto, op_types: Iterable[str] = QDQ_OP_TYPES) -> list[str]:
    """Names of the first quantizable node on every path from a graph input, and of the last on every path to
    a graph output (kept float). The walk goes through ops that move values without changing them (a Cast,
    a Reshape, a Transpose): the Conv after them still sees the input's range, or writes the output's. It
    stops at any other op: a Gather from an embedding table (the prior's first layer) makes new values,
    whose range training set, and the Conv after it quantizes like any inner layer."""
    ops = set(op_types)
    nodes = list(model.graph.node)
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            readers.setdefault(name, []).append(i)
    writer = {name: i for i, n in enumerate(nodes) for name in n.output}
    inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}

    def first(
        start: Iterable[str], step: Callable[[int], Iterable[str]], nexts: Callable[[str], Iterable[int]]
    ) -> set[int]:
        found, seen, todo = set(), set(), list(start)
        while todo:
            for i in nexts(todo.pop()):
                if i in seen:
                    continue
                seen.add(i)
                if nodes[i].op_type in ops:
                    found.add(i)
                elif nodes[i].op_type in LAYOUT_OPS:
                    todo.extend(step(i))
        return found

    after_inputs = first(inputs, lambda i: nodes[i].output, lambda name: readers.get(name, ()))
    before_outputs = first(
        (o.name for o in model.graph.output),
        lambda i: nodes[i].input,
        lambda name: (writer[name],) if name in writer else (),
    )
    return [nodes[i].name for i in sorted(after_inputs | before_outputs) if nodes[i].name]


def matching_nodes(model: onnx.ModelProto, patterns: Iterable[str]) -> list[str]:
    """Names of nodes whose name contains any of ``patterns`` (case-insensitive)."""
    regex = re.compile("|".join(re.escape(p) for p in patterns), re.IGNORECASE) if patterns else None
    return [n.name for n in model.graph.node if regex is not None and n.name and regex.search(n.name)]


def to_fp16_onnx(src: str | Path, dst: str | Path, keep_float_patterns: Sequence[str] = KEEP_FLOAT_PATTERNS) -> Path:
    """An fp16 copy of ``src`` for TensorRT 11, inputs and outputs left fp32 so graphs still chain."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise UserError(
            "fp16 engines on TensorRT 11 need onnxconverter-common to convert the graph (pip install edge-ad[tensorrt])"
        ) from None
    model = _converter_safe_copy(load_model(src))
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, node_block_list=matching_nodes(model, keep_float_patterns)
    )
    _retarget_float_casts(converted.graph, {})
    try:
        onnx.checker.check_model(converted, full_check=True)
    except Exception as e:  # the converter's output is the check's subject; any failure means "not usable"
        first = str(e).strip().splitlines()[0][:200]
        raise UserError(
            f"the fp16 conversion of {Path(src).name} is not a valid graph ({first}); build it in fp32"
        ) from None
    dst = Path(dst)
    onnx.save(converted, str(dst))
    return dst


def _retarget_float_casts(graph: onnx.GraphProto, types: dict[str, int]) -> None:
    """Make ``Cast(to=float)`` nodes in converted regions cast to fp16, as their outputs are now typed.

    onnxconverter-common retypes the tensors of converted nodes to fp16 but leaves a Cast's ``to``
    attribute at float (e.g. a bool mask cast to float), which the type check then rejects.
    """
    from onnx import TensorProto

    types = {**types, **{v.name: v.type.tensor_type.elem_type for v in graph.value_info}}
    for node in graph.node:
        if node.op_type == "Cast" and types.get(node.output[0]) == TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
        for attr in node.attribute:
            if attr.HasField("g"):
                _retarget_float_casts(attr.g, types)


def _converter_safe_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every node named and no graph output also read inside the graph (frame_score from the map).

    onnxconverter-common names its casts after the node they feed, so two unnamed readers of one input get
    the same cast name; and with keep_io_types it casts a shared output back to fp32 but leaves its internal
    readers typed fp16. Both give graphs ONNX Runtime and TensorRT reject.
    """
    from onnx import helper

    m = copy.deepcopy(model)
    for i, node in enumerate(m.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}__edge_ad"
    consumed = {name for node in m.graph.node for name in node.input}
    shared = [o.name for o in m.graph.output if o.name in consumed]
    if not shared:
        return m
    inner = {name: f"{name}__inner" for name in shared}
    for node in m.graph.node:
        node.input[:] = [inner.get(n, n) for n in node.input]
        node.output[:] = [inner.get(n, n) for n in node.output]
    m.graph.node.extend(helper.make_node("Identity", [inner[n]], [n], name=f"{n}__output") for n in shared)
    return m


def to_qdq_onnx(
    src: str | Path,
    dst: str | Path,
    feeds: Sequence[dict[str, np.ndarray]],
    exclude_patterns: Sequence[str] = KEEP_FLOAT_PATTERNS,
    op_types: Sequence[str] = QDQ_OP_TYPES,
) -> Path:
    """An explicitly quantized (Q/DQ, symmetric int8) copy of ``src``, calibrated on ``feeds``.

    Symmetric scales with zero points of 0 and unquantized biases are what TensorRT's parser accepts;
    weights get per-channel scales. The calibration runs on the CPU with ONNX Runtime.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not feeds:
        raise UserError("INT8 calibration needs at least one batch of normal frames")

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    model = load_model(src)
    dst = Path(dst)
    quantize_static(
        model,
        dst,
        Feeds(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(op_types),
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=sorted({*matching_nodes(model, exclude_patterns), *boundary_nodes(model, op_types)}),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "MatMulConstBOnly": True,
            "QuantizeBias": False,
        },
    )
    return dst


def prepare_onnx(
    src: Path, workdir: Path, plan: PrecisionPlan, feeds: Sequence[dict[str, np.ndarray]] | None = None
) -> Path:
    """The graph TensorRT should parse for ``plan``: ``src`` itself, an fp16 copy, or a Q/DQ copy."""
    if plan.onnx_form == "fp16":
        return to_fp16_onnx(src, Path(workdir) / f"{src.stem}.fp16.onnx")
    if plan.onnx_form == "qdq":
        if has_qdq(src):
            return src
        if not feeds:
            raise UserError(
                f"INT8 engines need an explicitly quantized (Q/DQ) graph and {src.name} has no "
                "QuantizeLinear/DequantizeLinear nodes: give calibration frames of normal footage so edge-ad "
                "adds them (onnxruntime.quantization.quantize_static, QDQ format), or build with fp16"
            )
        return to_qdq_onnx(src, Path(workdir) / f"{src.stem}.qdq.onnx", feeds)
    return src
