"""``edge-ad eval``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        data: Path = typer.Option(..., "--data", help="UCSD-layout root with Test/ clips and ground truth."),
        run: Path = typer.Option(None, "--run", help="Training run to evaluate (PyTorch)."),
        bundle: Path = typer.Option(None, "--bundle", help="Exported bundle to evaluate (ONNX Runtime)."),
        out: Path = typer.Option(Path("reports/latest"), "--out", help="Where report.json/md and figures go."),
        baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also run frame-diff and MOG2."),
        clips: int = typer.Option(None, "--clips", min=1, help="Only the first N test clips."),
        compare_maps: str = typer.Option(
            None, "--compare-maps", help="With --run: also score these maps alone, e.g. residual,ssim,am,nll,restore."
        ),
        config: Path = typer.Option(
            None,
            "--config",
            help="The config `edge-ad run` gets: its runtime.alerts rule is what the alert table replays.",
        ),
        set_: list[str] = typer.Option(
            [], "--set", help="Override it, e.g. --set runtime.alerts.threshold=3 (repeatable)."
        ),
    ) -> None:
        """Score every test clip with our maps and the baselines; print the tables and write the report."""
        from edge_ad.config import load_config
        from edge_ad.evaluation.evaluate import evaluate

        _only_alert_options(set_)
        alerts = load_config(config, list(set_)).runtime.alerts
        maps = [m.strip() for m in compare_maps.split(",") if m.strip()] if compare_maps else None
        evaluate(data, out, run, bundle, baselines, clips, maps, alerts)
        typer.echo(f"report written to {out}/report.md")


def _only_alert_options(overrides: list[str]) -> None:
    """Eval uses the alert rule of the config and nothing else of it: another option would be accepted and
    silently change nothing (a run's or a bundle's scoring is fixed by its calibration)."""
    from edge_ad.errors import UserError

    for item in overrides:
        if "=" not in item:
            continue  # not an override at all: load_config says how one is written
        key = item.split("=", 1)[0].strip()
        if key != "runtime.alerts" and not key.startswith("runtime.alerts."):
            raise UserError(
                f"--set {item}: eval replays only runtime.alerts.* options; to score a run otherwise, "
                "`edge-ad calibrate --run RUN --set scoring...` (on a copy of the run), then eval it"
            )
