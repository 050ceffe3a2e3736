"""A camera that drops out: a real RTSP server on 127.0.0.1 is stopped mid-stream and started again.

The server is GStreamer's RTSP server library (Debian's gstreamer1.0-rtsp) driven through ctypes, since the
Python bindings (gir1.2-gst-rtsp-server) are a separate package; it serves a live MJPEG test pattern.
"""

from __future__ import annotations

import ctypes.util
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from edge_ad.config import RuntimeConfig, StreamConfig
from edge_ad.export.bundle import load_bundle
from edge_ad.runtime.pipeline import Runtime

SERVER = r"""
import ctypes, sys
port, launch = sys.argv[1], sys.argv[2]
gst = ctypes.CDLL("libgstreamer-1.0.so.0")
rtsp = ctypes.CDLL("libgstrtspserver-1.0.so.0")
glib = ctypes.CDLL("libglib-2.0.so.0")
P, S = ctypes.c_void_p, ctypes.c_char_p
for name, args, res in [
    ("gst_rtsp_server_new", [], P), ("gst_rtsp_server_set_address", [P, S], None),
    ("gst_rtsp_server_set_service", [P, S], None), ("gst_rtsp_server_get_mount_points", [P], P),
    ("gst_rtsp_media_factory_new", [], P), ("gst_rtsp_media_factory_set_launch", [P, S], None),
    ("gst_rtsp_media_factory_set_shared", [P, ctypes.c_int], None),
    ("gst_rtsp_mount_points_add_factory", [P, S, P], None), ("gst_rtsp_server_attach", [P, P], ctypes.c_uint),
]:
    fn = getattr(rtsp, name)
    fn.argtypes, fn.restype = args, res
glib.g_main_loop_new.restype = P
glib.g_main_loop_run.argtypes = [P]
gst.gst_init(None, None)
server = rtsp.gst_rtsp_server_new()
rtsp.gst_rtsp_server_set_address(server, b"127.0.0.1")
rtsp.gst_rtsp_server_set_service(server, port.encode())
factory = rtsp.gst_rtsp_media_factory_new()
rtsp.gst_rtsp_media_factory_set_launch(factory, launch.encode())
rtsp.gst_rtsp_media_factory_set_shared(factory, 1)
rtsp.gst_rtsp_mount_points_add_factory(rtsp.gst_rtsp_server_get_mount_points(server), b"/cam", factory)
if not rtsp.gst_rtsp_server_attach(server, None):
    sys.exit("could not listen on port " + port)
print("ready", flush=True)
glib.g_main_loop_run(glib.g_main_loop_new(None, 0))
"""
LAUNCH = (
    "( videotestsrc pattern=ball is-live=true ! video/x-raw,format=I420,width=160,height=120,framerate=15/1 "
    "! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)


def _gst_ready() -> str | None:
    if ctypes.util.find_library("gstrtspserver-1.0") is None:
        return "libgstrtspserver-1.0 is not installed (apt-get install gstreamer1.0-rtsp)"
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None:
        return "gst-inspect-1.0 is not installed (apt-get install gstreamer1.0-tools)"
    for element in ("videotestsrc", "jpegenc", "rtpjpegpay"):
        if subprocess.run([inspect, element], capture_output=True).returncode != 0:
            return f"GStreamer element {element} is missing"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    def __init__(self, script: Path, port: int):
        self.script, self.port = script, port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), str(self.port), LAUNCH], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", self.proc.stderr.read() if self.proc.stderr else line

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("decoder", ["opencv", "ffmpeg"])
def test_reconnects_after_the_server_goes_away(decoder: str, tiny_bundle: Path, tmp_path: Path) -> None:
    reason = _gst_ready()
    if reason:
        pytest.skip(reason)
    if decoder == "ffmpeg" and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    script = tmp_path / "rtsp_server.py"
    script.write_text(SERVER)
    server = RtspServer(script, free_port())
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt_string(zmq.SUBSCRIBE, "map.")
    sub.connect(endpoint)
    cfg = RuntimeConfig(
        endpoint=endpoint,
        metrics_port=0,
        journal_dir=str(tmp_path / "journal"),
        watchdog_s=1.5,
        reconnect_initial_s=0.2,
        reconnect_max_s=0.5,
        heartbeat_s=0.5,
    )
    stream = StreamConfig(name="gate", source=server.url, kind="url", decoder=decoder)
    runtime = Runtime(load_bundle(tiny_bundle), cfg, [stream])
    status = runtime.board.streams["gate"]
    try:
        server.start()
        runtime.start()
        wait_for(lambda: status.published >= 5, 20, "the first frames")
        server.stop()
        wait_for(lambda: status.state == "reconnecting", 10, "the runtime to notice the server is gone")
        before = status.captured
        wait_for(lambda: status.reconnects >= 1, 10, "a reconnect attempt")
        assert status.captured == before  # nothing arrives while the server is down
        server.start()
        wait_for(lambda: status.captured >= before + 5, 20, "frames after the server came back")
        wait_for(lambda: status.published >= before + 5, 5, "their maps")
        assert status.state == "running"
        assert runtime.metrics_server is not None
        text = urllib.request.urlopen(runtime.metrics_server.url + "/metrics", timeout=5).read().decode()
        samples = {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.labels.get("stream") == "gate"
        }
        assert samples["edge_ad_source_reconnects_total"] >= 1
        assert samples["edge_ad_frames_total"] >= before + 5
        # The server sends 15 frames/s to a 10 frames/s model: the rate is measured from the arrivals (the
        # ffmpeg pipe says nothing of it), and a third of the frames are not scored.
        assert samples["edge_ad_frames_decimated_total"] > 0
        runtime.stop()
        assert runtime.done.wait(3)
    finally:
        runtime.stop()
        runtime.close()
        server.stop()
    maps = []
    while sub.poll(500):
        _, header, _ = sub.recv_multipart()
        maps.append(json.loads(header))
    sub.close(linger=0)
    ctx.term()
    # The publisher kept going across the outage: frame numbers only grow, and maps came from both sides of it.
    indices = [h["frame_index"] for h in maps]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert len(maps) >= before + 5
