"""``edge-ad train`` and ``edge-ad calibrate``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edge_ad.cli.config_cmd import OVERRIDE_HELP

if TYPE_CHECKING:
    from edge_ad.training.rundir import RunDir


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        data: Path = typer.Option(..., "--data", help="UCSD-layout root whose Train/ clips hold normal footage."),
        out: Path = typer.Option(..., "--out", help="Run directory for checkpoints, logs and calibration."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML config (configs/*.yaml)."),
        stage: str = typer.Option("all", "--stage", help="vqvae, prior or all."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
        calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="Calibrate on validation clips."),
        set_: list[str] = typer.Option([], "--set", help=OVERRIDE_HELP),
    ) -> None:
        """Train the VQ-VAE on normal frames, then the prior on their codes; then calibrate."""
        from edge_ad.config import load_config
        from edge_ad.errors import UserError

        if stage not in ("vqvae", "prior", "all"):
            raise UserError(f"unknown stage '{stage}'; choose vqvae, prior or all")
        cfg = load_config(config, set_)
        from edge_ad.training.train import train as run_training

        run = run_training(cfg, data, out, stage, resume)  # type: ignore[arg-type]
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun, rank 0 calibrates and reports
        if calibrate and stage != "vqvae":
            _calibrate(run.root, data)
        typer.echo(f"run ready: {run.root}")

    @app.command()
    def calibrate(
        run: Path = typer.Option(..., "--run", help="Training run directory."),
        data: Path = typer.Option(None, "--data", help="Its data root (default: the one it was trained on)."),
        normal: list[Path] = typer.Option(
            [],
            "--normal",
            help="More normal footage of the camera the model never trained on: a video file, a folder of "
            "frames, or a folder of either (repeatable). Longer footage sets a threshold closer to the budget.",
        ),
        set_: list[str] = typer.Option(
            [],
            "--set",
            help="Change the run's scoring first, e.g. --set scoring.normalise=global (repeatable; written to "
            "its config.yaml; only scoring.* can change after training).",
        ),
    ) -> None:
        """Set map normalisation and the alert threshold on the run's normal validation clips (and --normal)."""
        _calibrate(run, data, normal, set_)


def _rescore(run: RunDir, overrides: list[str]) -> str:
    """Apply ``scoring.*`` overrides to the run's config.yaml; returns the text it had. The rest of the config
    describes the trained networks, which an override cannot retrain."""
    import yaml

    from edge_ad.config import apply_overrides, config_from_dict, parse_override
    from edge_ad.errors import UserError

    run.load_config()  # no run, or a damaged config: said before anything is changed
    for item in overrides:
        path, _ = parse_override(item)
        if path[0] != "scoring" or len(path) < 2:
            raise UserError(
                f"--set {item}: calibrate changes only scoring.* options; the rest was trained into the run "
                "(train again to change it)"
            )
        if path[1] == "assumed_fps":
            raise UserError(
                f"--set {item}: scoring.assumed_fps is the frame rate of the footage the run was trained on; "
                "train again on footage at the new rate (edge-ad data import --fps)"
            )
    before = run.config.read_text()
    raw = apply_overrides(yaml.safe_load(before), overrides)
    cfg = config_from_dict(raw, str(run.config), overrides)
    _write_atomically(run.config, cfg.to_yaml())
    return before


def _write_atomically(path: Path, text: str) -> None:
    """A run's config is never left half written: the new text goes to a sibling file, then replaces it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _calibrate(run: Path, data: Path | None, normal: list[Path] | None = None, overrides: Sequence[str] = ()) -> None:
    """``overrides``: ``scoring.*`` changes written to the run first; if the calibration fails, the run keeps
    the config its calibration was made for."""
    from edge_ad.data.video import quiet_ffmpeg
    from edge_ad.errors import UserError
    from edge_ad.scoring.calibrate import calibrate_run
    from edge_ad.training.rundir import RunDir

    quiet_ffmpeg()
    rd = RunDir(run)
    if data is None:
        rd.load_config()  # a path that is no run says so, before it is asked which data it trained on
        root = rd.read_json("split").get("data_root") if rd.split.is_file() else None
        data = Path(root) if isinstance(root, str) else None
        if data is None:
            raise UserError(f"pass --data: {run} does not say which data it was trained on")
    before = _rescore(rd, list(overrides)) if overrides else None
    try:
        calib = calibrate_run(run, data, normal)
    except BaseException:
        if before is not None:
            _write_atomically(rd.config, before)
        raise
    note = "" if calib["budget_resolved"] else " (extrapolated: too little normal footage for the budget)"
    extra = sum(f["frames"] for f in calib["normal_footage"])
    sampled = sum(f["sampled"] for f in calib["normal_footage"])
    where = f"{calib['val_frames'] - extra} validation frames"
    if extra:
        where += f" and {extra} of normal footage" + (f" (statistics on {sampled} of them)" if sampled < extra else "")
    typer.echo(f"calibrated on {where}: alert threshold {calib['threshold']:.4g}{note}")
    for f in calib["normal_footage"]:
        if f["skipped"]:
            typer.echo(f"warning: {f['path']}: {f['skipped']} damaged frame(s) skipped", err=True)
