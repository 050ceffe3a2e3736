"""The ZeroMQ side on real sockets: message layout, seq numbering, CURVE with real keys, a slow subscriber."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

from edge_ad.alerting import AlertTracker
from edge_ad.config import AlertConfig
from edge_ad.errors import UserError
from edge_ad.runtime.publish import SECRET_ENV, Publisher, encode_map
from edge_ad.runtime.subscribe import decode_map, describe


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def sub_socket(ctx: zmq.Context, endpoint: str, **curve: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for key, value in curve.items():
        setattr(sock, key, value)
    sock.setsockopt_string(zmq.SUBSCRIBE, "")
    sock.connect(endpoint)
    return sock


def wait_ready(pub: Publisher, n: int = 1) -> None:
    assert pub.wait_for_subscribers(n, 5.0, _never()) == n


def _never():
    import threading

    return threading.Event()


def test_encode_map_uint8_and_float16() -> None:
    amap = np.array([[-1.0, 0.0, 0.5], [1.0, 2.0, 9.0]], np.float32)
    u8 = encode_map(amap, "uint8", map_scale=2.0)
    assert u8.dtype == np.uint8 and u8.tolist() == [[0, 0, 64], [128, 255, 255]]
    f16 = encode_map(amap, "float16", map_scale=2.0)
    assert f16.dtype == np.float16 and np.allclose(f16, amap)


def test_messages_have_the_documented_layout_and_one_seq_per_stream() -> None:
    endpoint = free_endpoint()
    pub = Publisher(endpoint, sndhwm=100)
    ctx = zmq.Context()
    sub = sub_socket(ctx, endpoint)
    try:
        wait_ready(pub)
        amap = np.arange(12, dtype=np.uint8).reshape(3, 4)
        pub.send_map("a", 7, 123.5, amap, 0.25, None, map_scale=2.0)
        pub.send_heartbeat("a", {"state": "running"})
        pub.send_map("b", 0, 124.0, amap, 0.5, "x1")
        tracker = AlertTracker("a", 1.0, AlertConfig(min_frames=1))
        event = tracker.update(8, 124.5, 3.0)
        assert event is not None
        event.boxes = [[1, 2, 3, 4]]
        pub.send_alert(event, b"jpeg-bytes")
        got = [sub.recv_multipart() for _ in range(4)]
    finally:
        sub.close()
        ctx.term()
        pub.close()
    topics = [g[0].decode() for g in got]
    headers = [json.loads(g[1]) for g in got]
    assert topics == ["map.a", "heartbeat.a", "map.b", "alert.a"]
    assert [(h["stream"], h["seq"]) for h in headers] == [("a", 0), ("a", 1), ("b", 0), ("a", 2)]
    m = headers[0]
    assert m["v"] == 1 and m["frame_index"] == 7 and m["ts_capture"] == 123.5 and m["ts_publish"] >= 123.5
    assert m["shape"] == [3, 4] and m["dtype"] == "uint8" and m["score"] == 0.25 and m["alert"] is None
    assert np.array_equal(decode_map(m, got[0][2]), amap)
    assert np.allclose(decode_map(m, got[0][2], values=True), amap * 2.0 / 255.0)
    a = headers[3]
    assert (a["event"], a["alert_id"], a["frame_index"], a["boxes"]) == ("start", event.alert_id, 8, [[1, 2, 3, 4]])
    assert got[3][2] == b"jpeg-bytes"
    assert describe(topics[0], m, got[0][2]).startswith("map.a seq=0 frame=7 score=0.25 4x3 uint8")


def test_a_subscriber_that_stops_reading_blocks_neither_the_publisher_nor_the_others() -> None:
    """Until 2026-12-07 XPUB_NODROP made every send fail once one subscriber's queue was full: a frozen client
    silenced every other (with it, this reader got the first 100 of the 2000 messages and nothing after)."""
    endpoint = free_endpoint()
    pub = Publisher(endpoint, sndhwm=100)
    ctx = zmq.Context()
    stuck = ctx.socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 10)
    stuck.setsockopt(zmq.RCVBUF, 4096)
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.setsockopt_string(zmq.SUBSCRIBE, "")
    stuck.connect(endpoint)
    reader = sub_socket(ctx, endpoint)
    big = np.zeros((512, 512), np.uint8)
    seqs: list[int] = []
    try:
        wait_ready(pub, 2)
        t0 = time.monotonic()
        for i in range(2000):
            pub.send_map("cam", i, time.time(), big, 0.0, None)
            if reader.poll(1000):  # the reader keeps up, as a healthy subscriber does
                seqs.append(json.loads(reader.recv_multipart()[1])["seq"])
        elapsed = time.monotonic() - t0
        stuck_got = 0
        while stuck.poll(200):
            stuck.recv_multipart()
            stuck_got += 1
    finally:
        stuck.close()
        reader.close()
        ctx.term()
        pub.close(linger_ms=0)
    assert elapsed < 10.0  # never waited for the stuck subscriber
    assert seqs == list(range(2000))  # the reading subscriber lost nothing
    assert stuck_got < 2000  # the stuck one lost its own, and sees the gaps in seq


def test_port_in_use_is_one_line() -> None:
    endpoint = free_endpoint()
    first = Publisher(endpoint, sndhwm=10)
    try:
        with pytest.raises(UserError, match="already in use .* --endpoint"):
            Publisher(endpoint, sndhwm=10)
    finally:
        first.close()


def test_curve_encrypts_and_only_keyholders_receive(tmp_path: Path) -> None:
    server_public, server_secret_file = zmq.auth.create_certificates(tmp_path, "server")
    server_public_key = zmq.auth.load_certificate(server_public)[0]
    endpoint = free_endpoint()
    pub = Publisher(endpoint, 100, curve=True, curve_secret_file=str(server_secret_file))
    assert pub.public_key == server_public_key
    ctx = zmq.Context()
    client_public, client_secret = zmq.curve_keypair()
    good = sub_socket(
        ctx, endpoint, curve_serverkey=server_public_key, curve_publickey=client_public, curve_secretkey=client_secret
    )
    plain = sub_socket(ctx, endpoint)  # no CURVE: the handshake fails, it never subscribes
    try:
        wait_ready(pub)
        for i in range(3):
            pub.send_heartbeat("cam", {"n": i})
        assert good.poll(3000)
        assert json.loads(good.recv_multipart()[1])["n"] == 0
        assert not plain.poll(500)
    finally:
        good.close()
        plain.close()
        ctx.term()
        pub.close()


def test_curve_client_allow_list(tmp_path: Path) -> None:
    keys, clients = tmp_path / "keys", tmp_path / "clients"
    keys.mkdir()
    clients.mkdir()
    _, server_secret_file = zmq.auth.create_certificates(keys, "server")
    server_public = zmq.auth.load_certificate(server_secret_file)[0]
    allowed_public_file, allowed_secret_file = zmq.auth.create_certificates(keys, "allowed")
    _, stranger_secret_file = zmq.auth.create_certificates(keys, "stranger")
    (clients / "allowed.key").write_bytes(Path(allowed_public_file).read_bytes())
    endpoint = free_endpoint()
    pub = Publisher(
        endpoint, 100, curve=True, curve_secret_file=str(server_secret_file), curve_clients_dir=str(clients)
    )
    ctx = zmq.Context()

    def client(secret_file: Path) -> zmq.Socket:
        public, secret = zmq.auth.load_certificate(secret_file)
        return sub_socket(ctx, endpoint, curve_serverkey=server_public, curve_publickey=public, curve_secretkey=secret)

    allowed, stranger = client(allowed_secret_file), client(stranger_secret_file)
    try:
        wait_ready(pub)
        pub.send_heartbeat("cam", {})
        assert allowed.poll(3000)
        assert not stranger.poll(500)
    finally:
        allowed.close()
        stranger.close()
        ctx.term()
        pub.close()


def test_curve_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    public, secret = zmq.curve_keypair()
    monkeypatch.setenv(SECRET_ENV, secret.decode())
    pub = Publisher(free_endpoint(), 10, curve=True)
    try:
        assert pub.public_key == public
    finally:
        pub.close()
    monkeypatch.setenv(SECRET_ENV, "too-short")
    with pytest.raises(UserError, match="not a 40-character Z85"):
        Publisher(free_endpoint(), 10, curve=True)
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(UserError, match="no server key"):
        Publisher(free_endpoint(), 10, curve=True)
    monkeypatch.setenv(SECRET_ENV, secret.decode())
    pub = Publisher(free_endpoint(), 10)  # the key is there, CURVE is not on: say so rather than go plaintext
    try:
        assert pub.warnings == [f"{SECRET_ENV} is set but runtime.curve is off: publishing in plaintext"]
        assert pub.security == "plaintext (runtime.curve is off)"
    finally:
        pub.close()


def test_subscribe_cli_speaks_curve(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import threading

    from edge_ad.cli.main import main

    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "server")
    endpoint = free_endpoint()
    pub = Publisher(endpoint, 100, curve=True, curve_secret_file=str(secret_file))
    stop = threading.Event()

    def beat() -> None:
        wait_ready(pub)
        while not stop.is_set():
            pub.send_heartbeat("cam", {"state": "running", "frames": 3})
            time.sleep(0.05)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["subscribe", "--endpoint", endpoint, "--server-key", str(public_file), "--count", "2",
                  "--timeout", "5"])  # fmt: skip
        assert exit_info.value.code == 0
    finally:
        stop.set()
        beater.join(timeout=2)
        pub.close()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("heartbeat.cam seq=") for line in lines)
    assert "state=running frames=3" in lines[0]


def test_a_server_key_file_that_cannot_serve(tmp_path: Path) -> None:
    public_file, _ = zmq.auth.create_certificates(tmp_path, "server")
    junk = tmp_path / "junk.key_secret"
    junk.write_text("not a certificate")
    for path, message in [
        (tmp_path / "nope.key_secret", "runtime.curve_secret_file: .* is not a file"),
        (junk, "not a zmq certificate"),
        (public_file, "holds only a public key; give the server's .key_secret file"),
    ]:
        with pytest.raises(UserError, match=message):
            Publisher(free_endpoint(), 10, curve=True, curve_secret_file=str(path))


def test_a_malformed_server_key_and_a_bad_allow_list_are_one_line(tmp_path: Path) -> None:
    """Until 2026-12-07: a truncated server key was a ZMQError traceback, and one unreadable certificate in the
    clients folder was a log line of pyzmq's after which every client, the allowed ones too, was refused."""
    short = tmp_path / "short.key_secret"
    short.write_text('metadata\ncurve\n    public-key = "abc"\n    secret-key = "abc"\n')
    with pytest.raises(UserError, match="short.key_secret: the CURVE server key is malformed"):
        Publisher(free_endpoint(), 10, curve=True, curve_secret_file=str(short))
    _, secret_file = zmq.auth.create_certificates(tmp_path, "server")
    public_file, _ = zmq.auth.create_certificates(tmp_path, "client")
    clients = tmp_path / "clients"
    clients.mkdir()
    with pytest.raises(UserError, match="holds no client certificate"):
        Publisher(free_endpoint(), 10, curve=True, curve_secret_file=str(secret_file), curve_clients_dir=str(clients))
    (clients / "client.key").write_bytes(Path(public_file).read_bytes())
    (clients / "x.key").write_text("junk")
    with pytest.raises(UserError, match="x.key: not a zmq certificate"):
        Publisher(free_endpoint(), 10, curve=True, curve_secret_file=str(secret_file), curve_clients_dir=str(clients))
    (clients / "x.key").unlink()
    os.chmod(secret_file, 0o644)
    pub = Publisher(free_endpoint(), 10, curve=True, curve_secret_file=str(secret_file), curve_clients_dir=str(clients))
    try:
        assert pub.security.startswith("CURVE, server public key ") and "1 allowed client(s)" in pub.security
        assert pub.warnings == [f"{secret_file} can be read by other users: chmod 600 it"]
    finally:
        pub.close()


def test_curve_keys_without_curve_on_are_a_config_error() -> None:
    """Until 2026-12-07 a secret file or an allow-list without `curve: true` was ignored: plaintext, silently."""
    from edge_ad.config import load_config

    for key in ("curve_secret_file=/k/server.key_secret", "curve_clients_dir=/k/clients"):
        with pytest.raises(UserError, match="given but curve is off: set runtime.curve: true"):
            load_config(None, [f"runtime.{key}"])
    assert load_config(None, ["runtime.curve=true", "runtime.curve_clients_dir=/k"]).runtime.curve
