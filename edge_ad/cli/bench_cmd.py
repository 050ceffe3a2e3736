"""``edge-ad bench``: the benchmarks of benchmarks/ from the command line, measured on this machine."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        bundle: Path = typer.Option(None, "--bundle", help="Bundle for the runtime benchmark (fps, latency)."),
        run: Path = typer.Option(
            None,
            "--run",
            help="Run dir for the restoration benchmark (needs --data); measured at the calibrated NLL threshold and at the 95th percentile.",
        ),
        data: Path = typer.Option(None, "--data", help="Data root with masked test clips (restoration)."),
        config: list[Path] = typer.Option([], "--config", "-c", help="Configs for the training benchmark."),
        batch: list[int] = typer.Option([1, 8], "--batch", min=1, help="Batch sizes for the runtime benchmark."),
        frames: int = typer.Option(300, "--frames", min=1, help="Frames replayed per runtime measurement."),
    ) -> None:
        """Measure what was asked for: runtime (--bundle), restoration (--run --data), training (--config)."""
        from edge_ad.errors import UserError

        if not (bundle or run or config):
            raise UserError("nothing to measure: pass --bundle, --run with --data, and/or --config")
        if config:
            from edge_ad.benchmarks.training_throughput import main as training

            training([a for c in config for a in ("--config", str(c))])
        if run:
            if data is None:
                raise UserError("the restoration benchmark needs --data (a data root with masked test clips)")
            from edge_ad.benchmarks.restoration import main as restoration

            restoration(["--run", str(run), "--data", str(data)])  # at the calibrated threshold
            restoration(["--run", str(run), "--data", str(data), "--quantile", "0.95"])  # the reference stressed
        if bundle:
            from edge_ad.benchmarks.runtime_fps import main as runtime

            runtime(["--bundle", str(bundle), "--frames", str(frames), "--batch", *map(str, batch)])
