"""ZeroMQ publishing: anomaly maps, alert events and heartbeats on one endpoint.

Every message is ``[topic, header JSON, payload]``; topics are ``map.<stream>``, ``alert.<stream>`` and
``heartbeat.<stream>``. ``seq`` is one counter per stream shared by its three topics and grows by one per
message: a subscriber of all of a stream's topics sees gaps exactly where it lost messages (a subscriber of
one topic sees the others' numbers as gaps too).

The socket is an XPUB, which publishes like a PUB but also sees subscriptions: a replay can wait for its
subscribers before the first frame (no slow-joiner loss). Sends never block. A subscriber that stops
reading loses its own messages once ``sndhwm`` are queued for it, and only its own: the others go on
receiving everything. (Until 2026-12-07 the socket set XPUB_NODROP, under which one stalled subscriber made
every send fail, so a frozen client silenced the alerts of every other.) The publisher cannot count a
subscriber's losses; the subscriber can, from the gaps in ``seq``.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from threading import Event

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from edge_ad.alerting import AlertEvent
from edge_ad.errors import UserError
from edge_ad.runtime.curve import client_certificates, readable_by_others, secret_certificate

VERSION = 1
SECRET_ENV = "EDGE_AD_CURVE_SECRET_KEY"
LINGER_MS = 1000  # at shutdown, queued messages get this long to leave


def encode_map(amap: np.ndarray, dtype: str, map_scale: float) -> np.ndarray:
    """uint8: map / map_scale * 255, rounded and clipped; float16: the map's own values."""
    if dtype == "float16":
        return np.ascontiguousarray(amap, dtype=np.float16)
    return np.clip(np.rint(amap * (255.0 / map_scale)), 0, 255).astype(np.uint8)


def load_server_keys(secret_file: str | None) -> tuple[bytes, bytes]:
    """(public, secret) for a CURVE server: from a zmq certificate file, or a Z85 secret in the environment."""
    if secret_file:
        return secret_certificate(Path(secret_file), "server", "runtime.curve_secret_file")
    env = os.environ.get(SECRET_ENV, "").strip()
    if env:
        try:
            return zmq.curve_public(env.encode()), env.encode()
        except (ValueError, zmq.ZMQError):
            raise UserError(f"{SECRET_ENV} is not a 40-character Z85 CURVE secret key") from None
    raise UserError(f"runtime.curve is on but there is no server key: set runtime.curve_secret_file or {SECRET_ENV}")


def _bind_error(endpoint: str, err: zmq.ZMQError) -> UserError:
    if err.errno == zmq.EADDRINUSE:
        return UserError(f"{endpoint} is already in use (another edge-ad run?); choose another with --endpoint")
    return UserError(f"cannot publish on {endpoint}: {err.strerror}")


class Publisher:
    """Owns the socket; call its methods from one thread only (ZeroMQ sockets are not thread-safe)."""

    def __init__(
        self,
        endpoint: str,
        sndhwm: int,
        curve: bool = False,
        curve_secret_file: str | None = None,
        curve_clients_dir: str | None = None,
    ):
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock = self._ctx.socket(zmq.XPUB)
        self._seq: dict[str, int] = defaultdict(int)
        self.public_key: bytes | None = None
        self.security = "plaintext (runtime.curve is off)"
        self.warnings: list[str] = []
        try:
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
            self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            self._sock.setsockopt(zmq.LINGER, LINGER_MS)
            if curve:
                self.public_key = self._secure(curve_secret_file, curve_clients_dir)
            elif os.environ.get(SECRET_ENV):
                self.warnings.append(f"{SECRET_ENV} is set but runtime.curve is off: publishing in plaintext")
            try:
                self._sock.bind(endpoint)
            except zmq.ZMQError as e:
                raise _bind_error(endpoint, e) from None
        except BaseException:
            self.close()
            raise
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _secure(self, secret_file: str | None, clients_dir: str | None) -> bytes:
        public, secret = load_server_keys(secret_file)
        if secret_file and readable_by_others(Path(secret_file)):
            self.warnings.append(f"{secret_file} can be read by other users: chmod 600 it")
        allowed = client_certificates(Path(clients_dir)) if clients_dir else 0
        try:
            self._sock.curve_secretkey = secret
            self._sock.curve_publickey = public
        except zmq.ZMQError as e:  # a certificate whose keys are not 40 Z85 characters
            where = secret_file or SECRET_ENV
            raise UserError(
                f"{where}: the CURVE server key is malformed ({e.strerror}); give 40-character Z85 keys"
            ) from None
        self._sock.curve_server = True
        if clients_dir:
            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=clients_dir)
        who = f"{allowed} allowed client(s) in {clients_dir}" if clients_dir else "any client with the key"
        self.security = f"CURVE, server public key {public.decode()}, {who}"
        return public

    def _send(self, stream: str, topic: str, header: dict, payload: bytes | np.ndarray) -> None:
        seq = self._seq[stream]
        self._seq[stream] = seq + 1
        head = json.dumps({"v": VERSION, "stream": stream, "seq": seq, **header}).encode()
        self._sock.send_multipart([topic.encode(), head, payload], flags=zmq.NOBLOCK)

    def send_map(
        self,
        stream: str,
        frame_index: int,
        ts_capture: float,
        data: np.ndarray,
        score: float,
        alert_id: str | None,
        map_scale: float = 1.0,
    ) -> None:
        """``map_scale``: the map value a uint8 255 stands for, so a subscriber can recover map values."""
        header = {
            "frame_index": frame_index,
            "ts_capture": ts_capture,
            "ts_publish": time.time(),
            "shape": list(data.shape),
            "dtype": str(data.dtype),
            "score": score,
            "alert": alert_id,
            "map_scale": map_scale,
        }
        self._send(stream, f"map.{stream}", header, np.ascontiguousarray(data))

    def send_alert(self, event: AlertEvent, jpeg: bytes | None) -> None:
        header = {
            "event": event.event,
            "alert_id": event.alert_id,
            "frame_index": event.frame_index,
            "ts": event.ts,
            "score": event.score,
            "peak_score": event.peak_score,
            "threshold": event.threshold,
            "boxes": event.boxes,
            "snapshot": event.snapshot,
        }
        self._send(event.stream, f"alert.{event.stream}", header, jpeg or b"")

    def send_heartbeat(self, stream: str, info: dict) -> None:
        self._send(stream, f"heartbeat.{stream}", {"ts": time.time(), **info}, b"")

    def _read_subscriptions(self, timeout_ms: int) -> int:
        """Consume subscription messages (the inbound queue must not fill); returns how many subscribed."""
        added = 0
        while self._sock.poll(timeout_ms, zmq.POLLIN):
            msg = self._sock.recv()
            added += 1 if msg[:1] == b"\x01" else 0
            timeout_ms = 0
        return added

    def drain(self) -> None:
        self._read_subscriptions(0)

    def wait_for_subscribers(self, count: int, timeout_s: float, stop: Event) -> int:
        """Block until ``count`` subscriptions arrived, ``timeout_s`` passed or ``stop`` is set."""
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < count and not stop.is_set() and time.monotonic() < deadline:
            seen += self._read_subscriptions(100)
        return seen

    def close(self, linger_ms: int = LINGER_MS) -> None:
        if not self._sock.closed:
            self._sock.close(linger=linger_ms)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()
