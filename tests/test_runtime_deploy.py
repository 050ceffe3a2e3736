"""Deploy files: the Prometheus config and rules pass promtool, a real Prometheus scrapes a running runtime,
the systemd unit parses, and the example multi-stream config is a valid config."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from edge_ad.config import RuntimeConfig, StreamConfig, load_config
from edge_ad.export.bundle import load_bundle
from edge_ad.runtime.pipeline import Runtime

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install prometheus / systemd)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_config_and_rules_pass_promtool() -> None:
    promtool = need("promtool")
    config = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True)
    assert config.returncode == 0, config.stderr.decode() + config.stdout.decode()
    assert b"1 rule files found" in config.stdout
    rules = subprocess.run([promtool, "check", "rules", str(DEPLOY / "edge-ad.rules.yml")], capture_output=True)
    assert rules.returncode == 0, rules.stderr.decode() + rules.stdout.decode()


def test_rules_only_use_metrics_the_runtime_exports() -> None:
    import re

    from edge_ad.runtime.metrics import RuntimeMetrics

    metrics = RuntimeMetrics("test", "onnxruntime", "0")
    metrics.add_stream("s")
    exported = {s.name for family in metrics.registry.collect() for s in family.samples}
    used = set(re.findall(r"\bedge_ad_[a-z_]+", (DEPLOY / "edge-ad.rules.yml").read_text()))
    assert used and used <= exported, used - exported


def test_example_streams_config_is_valid() -> None:
    cfg = load_config(DEPLOY / "streams.example.yaml").runtime
    assert [s.name for s in cfg.streams] == ["entrance", "parking", "loading-bay"]
    assert {s.kind for s in cfg.streams} == {"camera", "url"}
    # `on:`/`off:` are YAML booleans; the config must still read them as the alert levels.
    assert (cfg.alerts.on, cfg.alerts.off, cfg.alerts.min_frames) == (1.0, 0.8, 3)


def test_systemd_unit_parses(tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    unit = (DEPLOY / "edge-ad.service").read_text()
    exe = shutil.which("edge-ad") or str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "edge-ad")
    (tmp_path / "edge-ad.service").write_text(unit.replace("/opt/edge-ad/.venv/bin/edge-ad", exe))
    out = subprocess.run([analyze, "verify", str(tmp_path / "edge-ad.service")], capture_output=True, text=True)
    if "Failed to connect to bus" in out.stderr or "System has not been booted with systemd" in out.stderr:
        pytest.skip("systemd-analyze needs a systemd host")
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]["result"]


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_runtime(tiny_bundle: Path, tiny_scene: Path, tmp_path: Path) -> None:
    prometheus = need("prometheus")
    clip = tiny_scene / "Test" / "Test001"
    cfg = RuntimeConfig(endpoint=f"tcp://127.0.0.1:{free_port()}", metrics_port=0, journal_dir=str(tmp_path / "j"))
    runtime = Runtime(load_bundle(tiny_bundle), cfg, [StreamConfig(name="lobby", source=str(clip), kind="frames",
                                                                  loop=True)])  # fmt: skip
    web = free_port()
    proc = None
    try:
        runtime.start()
        assert runtime.metrics_server is not None
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: edge-ad\n    static_configs: [{{targets: ['127.0.0.1:{runtime.metrics_server.port}']}}]\n"
        )
        proc = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{web}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        result: list[dict] = []
        while time.monotonic() < deadline:
            try:
                result = query(web, 'edge_ad_frames_total{job="edge-ad"}')
            except OSError:
                result = []
            if result and float(result[0]["value"][1]) > 0:
                break
            time.sleep(0.3)
        assert result, "Prometheus never stored edge_ad_frames_total"
        assert result[0]["metric"]["stream"] == "lobby" and float(result[0]["value"][1]) > 0
        assert float(query(web, 'up{job="edge-ad"}')[0]["value"][1]) == 1.0
        build = query(web, "edge_ad_build_info")
        assert build and build[0]["metric"]["backend"] == "onnxruntime"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        runtime.stop()
        runtime.close()
