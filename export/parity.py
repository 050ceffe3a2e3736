"""The parity gate: ONNX Runtime must agree with PyTorch on real frames, or the export fails.

Checked: codes identical on at least ``code_agreement`` of positions (encoder -> quantizer graphs), anomaly
maps of the fused graph and of the per-network chain within the stated tolerance, and frame scores ranking
the frames the same way. A near-tie in the nearest-code search may pick the other code under float rounding;
such a flip changes the map around it by design, so maps are compared on the frames whose codes agree, and
the flips themselves are bounded by the code-agreement tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from scipy.stats import spearmanr

from edge_ad.errors import UserError
from edge_ad.scoring.scorer import AnomalyPipeline


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run_batched(fn, frames: np.ndarray, batch: int) -> list[np.ndarray]:
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(frames), batch):
        outs.append(fn(frames[i : i + batch]))
    return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


@torch.no_grad()
def _torch_outputs(p: AnomalyPipeline, x: np.ndarray) -> list[np.ndarray]:
    t = torch.from_numpy(x)
    codes, _, _ = p.encode(t)
    m, s = p(t)
    return [codes.numpy(), m.numpy(), s.numpy()]


def _ort_chain(bundle_dir: Path, graphs: dict[str, str]):
    """The per-network chain the TensorRT backend runs: encoder -> quantizer -> prior -> scorer."""
    enc = session(bundle_dir / graphs["encoder"])
    qnt = session(bundle_dir / graphs["quantizer"])
    pri = session(bundle_dir / graphs["prior"]) if "prior" in graphs else None
    sco = session(bundle_dir / graphs["scorer"])
    scorer_inputs = {i.name for i in sco.get_inputs()}  # maps that need no distance export without it

    def run(x: np.ndarray) -> list[np.ndarray]:
        (z,) = enc.run(None, {"frames": x})
        codes, _, distance = qnt.run(None, {"z_e": z})
        feeds = {"frames": x, "codes": codes, "distance": distance}
        if pri is not None:
            (feeds["logits"],) = pri.run(None, {"codes": codes})
        m, s = sco.run(None, {k: v for k, v in feeds.items() if k in scorer_inputs})
        return [codes, m, s]

    return run


def check_parity(
    p: AnomalyPipeline, bundle_dir: Path, graphs: dict[str, str], frames: np.ndarray, code_agreement: float,
    map_atol: float, batch: int = 8,
) -> dict[str, Any]:  # fmt: skip
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    ref_codes, ref_map, ref_score = _run_batched(lambda x: _torch_outputs(p, x), frames, batch)
    fused = session(bundle_dir / graphs["pipeline"])
    f_map, f_score = _run_batched(lambda x: fused.run(None, {"frames": x}), frames, batch)
    c_codes, c_map, c_score = _run_batched(_ort_chain(bundle_dir, graphs), frames, batch)
    scale = max(float(np.abs(ref_map).max()), 1.0)
    same = (c_codes == ref_codes).reshape(len(frames), -1).all(1)
    report: dict[str, Any] = {
        "frames": int(len(frames)),
        "code_agreement": float((c_codes == ref_codes).mean()),
        "frames_with_code_flips": int((~same).sum()),
    }
    if not same.any():
        raise UserError("parity gate failed: ONNX Runtime picks other codes than PyTorch on every frame")
    for tag, m, s in (("pipeline", f_map, f_score), ("chain", c_map, c_score)):
        diff = np.abs(m[same] - ref_map[same]) / scale
        ref_s, got_s = ref_score[same], s[same]
        rho = spearmanr(ref_s, got_s).statistic if len(got_s) > 2 and np.ptp(ref_s) > 0 else 1.0
        report[tag] = {
            "map_rel_p999": float(np.quantile(diff, 0.999)),
            "map_rel_max": float(diff.max()),
            "score_abs_max": float(np.abs(got_s - ref_s).max()),
            "score_abs_max_all_frames": float(np.abs(s - ref_score).max()),
            "score_spearman": float(rho),
        }
    report["tolerance"] = {"code_agreement": code_agreement, "map_rel_p999": map_atol, "score_spearman": 0.999}
    problems = []
    if report["code_agreement"] < code_agreement:
        problems.append(f"codes agree on {report['code_agreement']:.4%} of positions (< {code_agreement:.2%})")
    for tag in ("pipeline", "chain"):
        r = report[tag]
        if r["map_rel_p999"] > map_atol:
            problems.append(f"{tag} maps differ by {r['map_rel_p999']:.2e} (p99.9, relative) > {map_atol:g}")
        if r["score_spearman"] < 0.999:
            problems.append(f"{tag} frame scores rank differently (Spearman {r['score_spearman']:.4f})")
    report["passed"] = not problems
    if problems:
        raise UserError("parity gate failed, ONNX Runtime disagrees with PyTorch: " + "; ".join(problems))
    return report
