"""``edge-ad run`` (the streaming runtime) and ``edge-ad subscribe`` (print what it publishes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

OVERRIDE_HELP = "Override a config value, e.g. --set runtime.alerts.on=1.2 (repeatable)."
SOURCE_OPTIONS = {"--camera": "camera", "--video": "video", "--frames": "frames", "--url": "url"}


class _OrderedSources(TyperCommand):
    """Keeps the raw arguments, so --name can pair with the sources in the order they were given."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["raw_args"] = list(args)
        return super().parse_args(ctx, args)


def sources_in_order(args: list[str]) -> list[tuple[str, str]]:
    """(kind, source) for each --camera/--video/--frames/--url, in command-line order."""
    found = []
    it = iter(args)
    for token in it:
        if token == "--":
            break
        option, eq, value = token.partition("=")
        if option in SOURCE_OPTIONS:
            found.append((SOURCE_OPTIONS[option], value if eq else next(it, "")))
    return found


def _default_name(kind: str, source: str, index: int) -> str:
    if kind == "camera":
        base = f"cam{source}" if source.isdigit() else Path(source).name
    elif kind in ("video", "frames"):
        base = Path(source.rstrip("/")).stem or kind
    else:
        base = f"url{index}"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-") or f"{kind}{index}"


def stream_configs(
    sources: list[tuple[str, str]], names: list[str], pace: str | None, loop: bool, decoder: str, hwaccel: str | None
) -> list[dict[str, Any]]:
    from edge_ad.errors import UserError

    if names and len(names) != len(sources):
        raise UserError(f"{len(names)} --name for {len(sources)} source(s): give one name per source, in order")
    taken: set[str] = set()
    streams = []
    for i, (kind, source) in enumerate(sources):
        name = names[i] if names else _default_name(kind, source, i)
        base, n = name, 2
        while not names and name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        stream: dict[str, Any] = {"name": name, "source": source, "kind": kind, "loop": loop}
        if pace:
            stream["pace"] = pace
        if kind == "url":
            stream.update(decoder=decoder, hwaccel=hwaccel)
        streams.append(stream)
    return streams


def _install_signal_handlers(stop: Any) -> None:
    """SIGINT/SIGTERM ask for a clean stop; a second Ctrl-C interrupts at once."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _setup_logging() -> None:
    """Our own one-line messages on stderr; OpenCV's and FFmpeg's per-retry warnings off.

    A camera that is down is reported once by the runtime; FFmpeg would repeat its error at every retry.
    OPENCV_FFMPEG_LOGLEVEL (e.g. 16 for errors) and OPENCV_LOG_LEVEL still bring them back when debugging.
    """
    import logging
    import os
    import sys

    from edge_ad.data.video import quiet_ffmpeg

    quiet_ffmpeg()
    if "OPENCV_LOG_LEVEL" not in os.environ:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("edge_ad")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def register(app: typer.Typer) -> None:
    @app.command("run", cls=_OrderedSources)
    def run(
        ctx: typer.Context,
        bundle: Path = typer.Option(..., "--bundle", help="Bundle directory made by `edge-ad export`."),
        camera: list[str] = typer.Option([], "--camera", help="Camera index or device path (repeatable)."),
        video: list[Path] = typer.Option([], "--video", help="Video file to replay (repeatable)."),
        frames: list[Path] = typer.Option([], "--frames", help="Folder of numbered frames, e.g. UCSD Test001."),
        url: list[str] = typer.Option([], "--url", help="rtsp://, http(s)://, ... stream (repeatable)."),
        name: list[str] = typer.Option([], "--name", help="Stream names, one per source, in the sources' order."),
        config: Path = typer.Option(None, "--config", help="YAML config (runtime section, streams)."),
        set_: list[str] = typer.Option([], "--set", help=OVERRIDE_HELP),
        backend: str = typer.Option(None, "--backend", help="onnxruntime (default) or tensorrt."),
        pace: str = typer.Option(None, "--pace", help="Replays: realtime (the file's fps, default) or max."),
        loop: bool = typer.Option(False, "--loop", help="Replays: start again at the end."),
        decoder: str = typer.Option("opencv", "--decoder", help="URLs: opencv (FFmpeg inside OpenCV) or ffmpeg."),
        hwaccel: str = typer.Option(None, "--hwaccel", help="With --decoder ffmpeg: ffmpeg -hwaccel value."),
        endpoint: str = typer.Option(None, "--endpoint", help="ZeroMQ endpoint to publish on."),
        metrics_port: int = typer.Option(None, "--metrics-port", help="Prometheus port (0 = any free port)."),
        journal: Path = typer.Option(None, "--journal", help="Folder for alerts.jsonl and snapshots."),
        max_frames: int = typer.Option(None, "--max-frames", min=1, help="Stop each source after N scored frames."),
    ) -> None:
        """Score live video or replays with a bundle; publish maps and alerts over ZeroMQ, metrics for Prometheus.

        Sources given here replace the runtime.streams of --config. Replays end by themselves; live sources
        run until SIGINT/SIGTERM.
        """
        from edge_ad.config import load_config
        from edge_ad.errors import UserError
        from edge_ad.export.bundle import load_bundle
        from edge_ad.runtime.pipeline import Runtime

        overrides = list(set_)
        flags: dict[str, str] = {}  # an override made from a flag is blamed on the flag
        for key, flag, value in (
            ("backend", "--backend", backend),
            ("endpoint", "--endpoint", endpoint),
            ("metrics_port", "--metrics-port", metrics_port),
            ("journal_dir", "--journal", journal),
            ("pace", "--pace", pace),
        ):
            if value is not None:
                overrides.append(f"runtime.{key}={value}")
                flags[overrides[-1]] = f"{flag} {value}"
        cfg = load_config(config, overrides, flags).runtime
        if decoder not in ("opencv", "ffmpeg"):
            raise UserError(f"--decoder {decoder}: choose opencv or ffmpeg")
        if hwaccel and decoder != "ffmpeg":
            raise UserError("--hwaccel needs --decoder ffmpeg (OpenCV's decoder takes no -hwaccel)")
        order = sources_in_order(ctx.meta.get("raw_args", []))
        if order:
            streams = stream_configs(order, name, pace, loop, decoder, hwaccel)
            given = f"runtime.streams={_yaml_list(streams)}"
            flags[given] = "the sources on the command line (--camera, --video, --frames, --url and --name)"
            cfg = load_config(config, [*overrides, given], flags).runtime
        elif name:
            raise UserError("--name needs sources on the command line (--camera/--video/--frames/--url)")
        _setup_logging()
        runtime = Runtime(load_bundle(bundle), cfg, cfg.streams, max_frames=max_frames)
        _install_signal_handlers(runtime.stop)
        raise typer.Exit(runtime.run())

    @app.command("subscribe")
    def subscribe_cmd(
        topic: list[str] = typer.Option([], "--topic", help="Topic prefix: map, alert, heartbeat, alert.cam0 ..."),
        endpoint: str = typer.Option("tcp://127.0.0.1:5556", "--endpoint", help="Where `edge-ad run` publishes."),
        count: int = typer.Option(None, "--count", min=1, help="Exit after N messages."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per message (header + payload size)."),
        timeout: float = typer.Option(
            None, "--timeout", min=0.0, help="Fail after this many seconds without a message."
        ),
        server_key: str = typer.Option(None, "--server-key", help="CURVE: the server's public key or its cert."),
        client_key: Path = typer.Option(None, "--client-key", help="CURVE: this client's secret cert file."),
    ) -> None:
        """Print what `edge-ad run` publishes, one line per message (Ctrl-C to stop)."""
        from edge_ad.runtime.subscribe import subscribe

        try:
            subscribe(
                endpoint,
                topic,
                lambda line: typer.echo(line),
                count=count,
                as_json=as_json,
                timeout_s=timeout,
                server_key=server_key,
                client_key_file=str(client_key) if client_key else None,
            )
        except KeyboardInterrupt:
            return


def _yaml_list(streams: list[dict[str, Any]]) -> str:
    """The streams as a YAML flow value, so they go through the same validation as a config file's."""
    import json

    return json.dumps(streams)
