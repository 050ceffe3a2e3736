"""The other end of the socket: ``edge-ad subscribe`` prints what a running ``edge-ad run`` publishes.

It is also the reference client: the header fields and payload layouts it decodes are the protocol
(see ``publish.py``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

from edge_ad.errors import UserError
from edge_ad.runtime.curve import public_certificate, secret_certificate

_Z85_KEY = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


def _public_key(value: str) -> bytes:
    """A Z85 public key (40 characters) or a zmq certificate file holding one."""
    if _Z85_KEY.match(value):
        return value.encode()
    path = Path(value)
    if path.is_file():
        return public_certificate(path)[0]
    raise UserError(f"--server-key: '{value}' is neither a 40-character Z85 key nor a certificate file")


def _curve_keys(server_key: str | None, client_key_file: str | None) -> tuple[bytes, bytes, bytes] | None:
    """(server public, client public, client secret), or None without CURVE; read before any socket exists."""
    if not server_key:
        if client_key_file:
            raise UserError("--client-key needs --server-key (the publisher's public key): CURVE needs both ends' keys")
        return None
    client = secret_certificate(Path(client_key_file), "client", "--client-key") if client_key_file else None
    return (_public_key(server_key), *(client or zmq.curve_keypair()))


def open_subscriber(
    endpoint: str, topics: list[str], server_key: str | None = None, client_key_file: str | None = None
) -> tuple[zmq.Context, zmq.Socket]:
    keys = _curve_keys(server_key, client_key_file)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        _configure(sock, keys, topics, endpoint)
    except UserError:
        sock.close()
        ctx.term()
        raise
    return ctx, sock


def _configure(sock: zmq.Socket, keys: tuple[bytes, bytes, bytes] | None, topics: list[str], endpoint: str) -> None:
    if keys is not None:
        try:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
        except zmq.ZMQError as e:  # a certificate whose key is not 40 Z85 characters
            raise UserError(f"a CURVE key is malformed ({e.strerror}); give 40-character Z85 keys") from None
    for topic in topics or [""]:
        sock.setsockopt_string(zmq.SUBSCRIBE, topic)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        raise UserError(f"cannot connect to {endpoint}: {e.strerror} (expected e.g. tcp://127.0.0.1:5556)") from None


def describe(topic: str, header: dict, payload: bytes) -> str:
    """One human line per message."""
    kind = topic.split(".", 1)[0]
    seq = header.get("seq")
    if kind == "map":
        h, w = header.get("shape", [0, 0])
        latency = (header.get("ts_publish", 0) - header.get("ts_capture", 0)) * 1000
        return (
            f"{topic} seq={seq} frame={header.get('frame_index')} score={header.get('score', 0):.5g} "
            f"{w}x{h} {header.get('dtype')} alert={header.get('alert') or '-'} latency={latency:.1f}ms"
        )
    if kind == "alert":
        return (
            f"{topic} seq={seq} {header.get('event')} id={header.get('alert_id')} frame={header.get('frame_index')} "
            f"score={header.get('score', 0):.5g} boxes={header.get('boxes')} snapshot={len(payload)} bytes"
        )
    if kind == "heartbeat":
        error = f" error={header['error']!r}" if header.get("error") else ""
        return (
            f"{topic} seq={seq} state={header.get('state')} frames={header.get('frames')} "
            f"dropped={header.get('dropped')} reconnects={header.get('reconnects')} alerts={header.get('alerts')}"
            + error
        )
    return f"{topic} {json.dumps(header)}"


def decode_map(header: dict, payload: bytes, values: bool = False) -> np.ndarray:
    """The map as sent (header's shape and dtype); ``values=True``: as float32 map values (uint8 x map_scale / 255)."""
    data = np.frombuffer(payload, dtype=np.dtype(header["dtype"])).reshape(header["shape"])
    if not values:
        return data
    if data.dtype == np.uint8:
        return data.astype(np.float32) * np.float32(header.get("map_scale", 1.0) / 255.0)
    return data.astype(np.float32)


def subscribe(
    endpoint: str,
    topics: list[str],
    out: Callable[[str], None],
    count: int | None = None,
    as_json: bool = False,
    timeout_s: float | None = None,
    server_key: str | None = None,
    client_key_file: str | None = None,
) -> int:
    """Print messages until ``count`` arrived (or forever); returns how many. Gives up after ``timeout_s`` idle."""
    ctx, sock = open_subscriber(endpoint, topics, server_key, client_key_file)
    received = 0
    try:
        while count is None or received < count:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while not sock.poll(200):
                if deadline is not None and time.monotonic() > deadline:
                    raise UserError(f"no message from {endpoint} for {timeout_s:g} s (is `edge-ad run` publishing?)")
            parts = sock.recv_multipart()
            if len(parts) != 3:
                continue
            topic, header, payload = parts[0].decode(), json.loads(parts[1]), parts[2]
            if as_json:
                out(json.dumps({"topic": topic, **header, "payload_bytes": len(payload)}))
            else:
                out(describe(topic, header, payload))
            received += 1
    finally:
        sock.close()
        ctx.term()
    return received
