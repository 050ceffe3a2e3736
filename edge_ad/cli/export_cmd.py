"""``edge-ad export``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        run: Path = typer.Option(..., "--run", help="Calibrated training run directory."),
        out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
        batch: int = typer.Option(
            None, "--batch", min=1, help="Batch size of the example input (the axis stays dynamic)."
        ),
        precision: str = typer.Option(None, "--precision", help="fp32, fp16 or int8 (for TensorRT engines)."),
        data: Path = typer.Option(None, "--data", help="Frames for the parity check (default: the run's data)."),
        engines: bool = typer.Option(False, "--engines", help="Also build TensorRT engines (GPU host only)."),
        force: bool = typer.Option(False, "--force", help="Replace an existing bundle directory."),
    ) -> None:
        """Export ONNX graphs, check parity with PyTorch and TensorRT readiness, write the bundle."""
        if engines:  # say so before minutes of export, not after
            from edge_ad.export.tensorrt import require_tensorrt_gpu

            require_tensorrt_gpu()
        from edge_ad.export.exporter import export_bundle

        bundle = export_bundle(run, out, batch, precision, data, force)
        par = bundle.manifest["parity"]
        typer.echo(
            f"bundle written: {bundle.path} ({len(bundle.manifest['files'])} files); parity: codes agree on "
            f"{par['code_agreement']:.4%}, map p99.9 diff {par['pipeline']['map_rel_p999']:.1e}"
        )
        if engines:
            from edge_ad.export.tensorrt import build_bundle_engines

            build_bundle_engines(bundle.path, bundle.manifest["precision"], bundle.manifest["batch"]["max_batch"])
