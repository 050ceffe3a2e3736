"""Prometheus metrics and the HTTP endpoint serving them (``/metrics``) and the health check (``/healthz``).

The metrics live in their own registry rather than prometheus_client's global one, so several runtimes
(tests, the benchmark) can live in one process and nothing else's metrics leak into the exposition.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from edge_ad.errors import UserError

STAGES = ("capture", "preprocess", "inference", "postprocess", "publish")
DROP_REASONS = ("queue_full", "corrupt", "shutdown")
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)

Health = Callable[[], tuple[bool, dict[str, Any]]]


class RuntimeMetrics:
    def __init__(self, version: str, backend: str, bundle_sha: str):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.frames = Counter("edge_ad_frames", "Frames scored and published, per stream.", ["stream"], registry=r)
        self.dropped = Counter(
            "edge_ad_frames_dropped",
            "Frames lost, per stream and reason: queue_full (a live stream outran the model), corrupt "
            "(undecodable), shutdown. A subscriber that stops reading loses its own messages (gaps in seq).",
            ["stream", "reason"],
            registry=r,
        )
        self.decimated = Counter(
            "edge_ad_frames_decimated",
            "Frames read but not scored, per stream: the source runs faster than the model's frame rate "
            "(runtime.analysis_fps), so only the frames at that rate are scored. Not lost: never meant for the model.",
            ["stream"],
            registry=r,
        )
        stage_help = "Time per frame (per batch for inference) in each stage."
        self.stage = Histogram("edge_ad_stage_seconds", stage_help, ["stage"], buckets=STAGE_BUCKETS, registry=r)
        latency_help = "From frame capture to its map being published."
        self.latency = Histogram(
            "edge_ad_latency_seconds", latency_help, ["stream"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.score = Gauge("edge_ad_anomaly_score", "Frame score of the last published frame.", ["stream"], registry=r)
        self.alerts = Counter("edge_ad_alerts", "Alerts started, per stream.", ["stream"], registry=r)
        self.reconnects = Counter(
            "edge_ad_source_reconnects", "Attempts to reconnect a live source.", ["stream"], registry=r
        )
        self.queue_depth = Gauge("edge_ad_queue_depth", "Frames waiting for inference.", ["stream"], registry=r)
        build = Info("edge_ad_build", "Version, backend and bundle of this runtime.", registry=r)
        build.info({"version": version, "backend": backend, "bundle_sha": bundle_sha})
        for stage in STAGES:
            self.stage.labels(stage)

    def add_stream(self, stream: str) -> None:
        """Create every series of a stream at zero, so rates and absent-series alerts work from the start."""
        series = (self.frames, self.decimated, self.latency, self.score, self.alerts, self.reconnects)
        for metric in (*series, self.queue_depth):
            metric.labels(stream)
        for reason in DROP_REASONS:
            self.dropped.labels(stream, reason)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def _router(metrics_app: Callable, health: Health) -> Callable:
    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            ok, body = health()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        if path in ("/", "/metrics"):
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class MetricsServer:
    """``/metrics`` and ``/healthz`` on host:port in a background thread; port 0 picks a free port."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health):
        app = _router(make_wsgi_app(registry), health)
        try:
            self._httpd = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(
                    f"metrics port {host}:{port} is already in use; choose another with --metrics-port"
                ) from None
            raise UserError(f"cannot serve metrics on {host}:{port}: {e.strerror}") from None
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
