"""``edge-ad synth`` and ``edge-ad data info``."""

from __future__ import annotations

import re
from pathlib import Path

import typer


def parse_size(text: str) -> tuple[int, int]:
    """``158x238`` -> (158, 238): height first, as the UCSD frames are described."""
    from edge_ad.errors import UserError

    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if m is None:
        raise UserError(f"--size {text!r} is not HEIGHTxWIDTH; write it like 158x238")
    return int(m.group(1)), int(m.group(2))


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Path = typer.Argument(..., help="Folder to write the scene to (UCSD layout)."),
        train: int = typer.Option(16, "--train", help="Number of training clips (normal only)."),
        test: int = typer.Option(8, "--test", help="Number of test clips (with anomalies and masks)."),
        frames: int = typer.Option(200, "--frames", help="Frames per clip."),
        seed: int = typer.Option(0, "--seed", help="Picks the camera layout and all traffic; same seed, same files."),
        size: str = typer.Option("158x238", "--size", help="Frame size HEIGHTxWIDTH."),
        force: bool = typer.Option(False, "--force", help="Write into a non-empty folder that is not a scene."),
    ) -> None:
        """Write a synthetic UCSD-like scene: pedestrians as normal; cyclists, skaters, carts, vehicles as anomalies."""
        from edge_ad.data.synth import make_scene

        summary = make_scene(out, train, test, frames, seed, parse_size(size), force=force)
        typer.echo(summary.describe())

    data = typer.Typer(help="Inspect datasets.", no_args_is_help=True)

    @data.command("info")
    def info(
        root: Path = typer.Argument(..., help="Dataset folder in UCSD layout (Train/, Test/, *.m)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        check_frames: bool = typer.Option(
            False, "--check-frames", help="Decode every frame and list the damaged ones (reads the whole dataset)."
        ),
    ) -> None:
        """Clips, frames, frame size, anomalous frames and mask coverage of a UCSD-layout dataset."""
        import json

        from edge_ad.data.info import dataset_info, render_info

        summary = dataset_info(root, check_frames=check_frames)
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            render_info(summary)

    @data.command("import")
    def import_(
        sources: list[Path] = typer.Argument(..., help="Video files, or folders of them (a day of recordings)."),
        out: Path = typer.Option(..., "--out", help="Dataset folder (UCSD layout); made if missing, added to if not."),
        test: bool = typer.Option(False, "--test", help="Write Test/ clips (label them in a UCSD*.m file)."),
        fps: float = typer.Option(10.0, "--fps", help="Frame rate to keep: the config's scoring.assumed_fps."),
        clip_seconds: float = typer.Option(20.0, "--clip-seconds", help="Length of each clip (UCSD's are 20 s)."),
        size: str | None = typer.Option(None, "--size", help="Resize frames to HEIGHTxWIDTH (default: as recorded)."),
        source_fps: float | None = typer.Option(None, "--source-fps", help="The recordings' rate, if they lie."),
    ) -> None:
        """Cut recordings into clip folders of a UCSD-layout dataset, resampled to the model's frame rate."""
        from edge_ad.data.importer import import_recordings
        from edge_ad.data.video import quiet_ffmpeg

        quiet_ffmpeg()  # a damaged recording is our one line, not FFmpeg's too
        summary = import_recordings(
            sources,
            out,
            split="test" if test else "train",
            fps=fps,
            clip_seconds=clip_seconds,
            size=parse_size(size) if size else None,
            source_fps=source_fps,
        )
        typer.echo(summary.describe())

    app.add_typer(data, name="data")
