"""What each stream is doing now, for the status line, the heartbeats and ``/healthz``.

Every event of the run (a frame captured or published, a drop, a reconnect, an alert) goes through the
board, which keeps the few numbers an operator reads and forwards each event to the Prometheus metrics, so
the two can never disagree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_ad.runtime.metrics import RuntimeMetrics

log = logging.getLogger("edge_ad.runtime")

# running: frames are flowing; reconnecting: a live source is down; finished: a replay reached its end.
STATES = ("starting", "running", "reconnecting", "finished", "stopped")


@dataclass
class StreamStatus:
    name: str
    live: bool
    state: str = "starting"
    captured: int = 0
    published: int = 0
    alerts: int = 0
    reconnects: int = 0
    decimated: int = 0  # read but not scored: the source runs faster than the model's frame rate
    dropped: Counter = field(default_factory=Counter)
    last_frame: float | None = None  # monotonic time of the last captured frame
    last_published: float | None = None  # monotonic time of the last published map
    error: str = ""
    latencies: deque = field(default_factory=lambda: deque(maxlen=2048))  # since the last status line
    window_start: float = field(default_factory=time.monotonic)
    window_published: int = 0


class StatusBoard:
    def __init__(self, metrics: RuntimeMetrics, watchdog_s: float):
        self.metrics = metrics
        self.watchdog_s = watchdog_s
        self.streams: dict[str, StreamStatus] = {}
        self._lock = threading.Lock()

    def add(self, name: str, live: bool) -> None:
        self.streams[name] = StreamStatus(name, live)
        self.metrics.add_stream(name)

    # Capture events (the CaptureEvents protocol of sources.py), from the stream's capture thread.
    def connected(self, stream: str) -> None:
        s = self.streams[stream]
        with self._lock:
            was, s.state, s.error = s.state, "running", ""
        if was == "reconnecting":
            log.info("%s: reconnected", stream)

    def disconnected(self, stream: str, reason: str) -> None:
        s = self.streams[stream]
        with self._lock:
            new = reason != s.error
            s.error = reason
            if s.live:
                s.state = "reconnecting"
        if new:
            log.warning("%s: %s%s", stream, reason, "; retrying" if s.live else "")

    def reconnecting(self, stream: str) -> None:
        with self._lock:
            self.streams[stream].reconnects += 1
        self.metrics.reconnects.labels(stream).inc()

    def corrupt(self, stream: str, count: int, reason: str) -> None:
        log.warning("%s: skipped %d undecodable frame(s): %s", stream, count, reason)
        self.dropped(stream, "corrupt", count)

    def decimated(self, stream: str) -> None:
        with self._lock:
            self.streams[stream].decimated += 1
        self.metrics.decimated.labels(stream).inc()

    def captured(self, stream: str) -> None:
        with self._lock:
            s = self.streams[stream]
            s.captured += 1
            s.last_frame = time.monotonic()

    def finished(self, stream: str, stopped: bool) -> None:
        with self._lock:
            s = self.streams[stream]
            s.state = "stopped" if stopped or s.live else "finished"

    # Pipeline events.
    def dropped(self, stream: str, reason: str, count: int = 1) -> None:
        with self._lock:
            self.streams[stream].dropped[reason] += count
        self.metrics.dropped.labels(stream, reason).inc(count)

    def queue_depth(self, stream: str, depth: int) -> None:
        self.metrics.queue_depth.labels(stream).set(depth)

    def stage(self, stage: str, seconds: float) -> None:
        self.metrics.stage.labels(stage).observe(seconds)

    def published(self, stream: str, latency_s: float, score: float) -> None:
        with self._lock:
            s = self.streams[stream]
            s.published += 1
            s.window_published += 1
            s.last_published = time.monotonic()
            s.latencies.append(latency_s)
        self.metrics.frames.labels(stream).inc()
        self.metrics.latency.labels(stream).observe(latency_s)
        self.metrics.score.labels(stream).set(score)

    def alert_started(self, stream: str) -> None:
        with self._lock:
            self.streams[stream].alerts += 1
        self.metrics.alerts.labels(stream).inc()

    # Readers.
    def healthy(self, s: StreamStatus, now: float) -> bool:
        """Delivered means published: a camera that sends frames the model never scores is not healthy."""
        if s.state in ("finished", "stopped"):
            return True
        return s.last_published is not None and now - s.last_published <= self.watchdog_s

    def health(self) -> tuple[bool, dict[str, Any]]:
        """200 when every stream delivered a frame within the watchdog (or is a finished replay)."""
        now = time.monotonic()
        with self._lock:
            streams = {
                s.name: {
                    "state": s.state,
                    "healthy": self.healthy(s, now),
                    "last_frame_age_s": None if s.last_frame is None else round(now - s.last_frame, 3),
                    "last_published_age_s": None if s.last_published is None else round(now - s.last_published, 3),
                    "frames": s.published,
                    "dropped": sum(s.dropped.values()),
                    "decimated": s.decimated,
                    "reconnects": s.reconnects,
                    "error": s.error,
                }
                for s in self.streams.values()
            }
        ok = all(v["healthy"] for v in streams.values())
        return ok, {"status": "ok" if ok else "unhealthy", "streams": streams}

    def heartbeat(self, stream: str) -> dict[str, Any]:
        with self._lock:
            s = self.streams[stream]
            return {
                "state": s.state,
                "frames": s.published,
                "dropped": sum(s.dropped.values()),
                "reconnects": s.reconnects,
                "alerts": s.alerts,
                "error": s.error,
            }

    def status_line(self) -> str:
        """One line for the log: fps, latency p50/p95, drops, alerts and reconnects per stream, since last call."""
        now = time.monotonic()
        parts = []
        with self._lock:
            for s in self.streams.values():
                fps = s.window_published / max(now - s.window_start, 1e-9)
                latency = "-"
                if s.latencies:
                    p50, p95 = np.percentile(np.asarray(s.latencies) * 1000.0, [50, 95])
                    latency = f"p50 {p50:.0f} ms p95 {p95:.0f} ms"
                part = (
                    f"{s.name} {s.state}: {fps:.1f} fps, latency {latency}, "
                    f"drops {sum(s.dropped.values())}, alerts {s.alerts}, reconnects {s.reconnects}"
                )
                if s.state == "reconnecting" and s.error:
                    part += f" ({s.error})"
                parts.append(part)
                s.latencies.clear()
                s.window_start, s.window_published = now, 0
        return " | ".join(parts)
