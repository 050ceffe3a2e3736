"""The bundle's ONNX graphs: one per network, the scoring graph, and the fused pipeline.

Every graph has named inputs and outputs and the batch axis as its only dynamic dimension; integer outputs
are int32 (TensorRT has no int64 tensors). The wrappers below only fix the interface; the computation is the
training code's own modules, so what is exported is what was evaluated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge_ad.scoring.scorer import AnomalyPipeline, quantize


class EncoderGraph(nn.Module):
    def __init__(self, p: AnomalyPipeline) -> None:
        super().__init__()
        self.encoder = p.vqvae.encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)


class QuantizerGraph(nn.Module):
    def __init__(self, p: AnomalyPipeline) -> None:
        super().__init__()
        self.vqvae = p.vqvae

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        codes, distance = quantize(self.vqvae, z_e)
        return codes, self.vqvae.quantizer.lookup(codes), distance


class DecoderGraph(nn.Module):
    def __init__(self, p: AnomalyPipeline) -> None:
        super().__init__()
        self.decoder = p.vqvae.decoder

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(quantized))


class PriorGraph(nn.Module):
    def __init__(self, p: AnomalyPipeline) -> None:
        super().__init__()
        self.prior = p.prior

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.prior(codes)


class ScorerGraph(nn.Module):
    def __init__(self, p: AnomalyPipeline) -> None:
        super().__init__()
        self.scorer = p.scorer

    def forward(self, frames, codes, distance, logits=None):  # noqa: ANN001 - signature varies with the prior
        return self.scorer(frames, codes, distance, logits)


@dataclass(frozen=True)
class GraphSpec:
    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"


def graph_specs(p: AnomalyPipeline, frames: torch.Tensor) -> list[GraphSpec]:
    """The graphs of a bundle, each with example inputs computed by the previous stage."""
    with torch.no_grad():
        z = p.vqvae.encoder(frames)
        codes, distance = quantize(p.vqvae, z)
        quantized = p.vqvae.quantizer.lookup(codes)
        logits = p.prior(codes) if p.prior is not None else None
    specs = [
        GraphSpec("encoder", EncoderGraph(p), (frames,), ["frames"], ["z_e"]),
        GraphSpec("quantizer", QuantizerGraph(p), (z,), ["z_e"], ["codes", "quantized", "distance"]),
        GraphSpec("decoder", DecoderGraph(p), (quantized,), ["quantized"], ["reconstruction"]),
    ]
    scorer_in = (frames, codes, distance)
    scorer_names = ["frames", "codes", "distance"]
    if p.prior is not None:
        specs.append(GraphSpec("prior", PriorGraph(p), (codes,), ["codes"], ["logits"]))
    if p.scorer.needs_prior:
        scorer_in += (logits,)
        scorer_names.append("logits")
    specs.append(GraphSpec("scorer", ScorerGraph(p), scorer_in, scorer_names, ["anomaly_map", "frame_score"]))
    specs.append(GraphSpec("pipeline", p, (frames,), ["frames"], ["anomaly_map", "frame_score"]))
    return specs


def export_graph(spec: GraphSpec, out_dir: Path, opset: int) -> Path:
    path = out_dir / spec.filename
    dynamic = {n: {0: "batch"} for n in spec.input_names + spec.output_names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            spec.module.eval(),
            spec.inputs,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path
