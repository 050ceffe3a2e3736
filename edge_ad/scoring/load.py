"""Rebuild the scoring pipeline from a run directory: weights, config and (if present) calibration."""

from __future__ import annotations

from pathlib import Path

from edge_ad.calibration_record import checked_calibration
from edge_ad.config import Config
from edge_ad.errors import UserError
from edge_ad.models.prior import PixelSNAIL
from edge_ad.models.vqvae import VQVAE
from edge_ad.scoring.scorer import PRIOR_MAPS, AnomalyPipeline, AnomalyScorer, base_map
from edge_ad.training import checkpoint
from edge_ad.training.rundir import RunDir


def load_models(run: RunDir, cfg: Config) -> tuple[VQVAE, PixelSNAIL | None]:
    run.require("vqvae")
    vqvae = VQVAE.from_config(cfg)
    checkpoint.load(run.vqvae, vqvae, cfg)
    prior = None
    if cfg.prior.enabled and run.prior.is_file():
        prior = PixelSNAIL.from_config(cfg)
        checkpoint.load(run.prior, prior, cfg)
    elif cfg.prior.enabled:
        print(f"warning: {run.root} has no trained prior; the nll and restore maps are skipped")
    return vqvae.eval(), (prior.eval() if prior is not None else None)


# Options that act after the frame score and the statistics (the published map's dilation): editing them
# needs no new calibration.
UNCALIBRATED_OPTIONS = frozenset({"map_dilation"})


def check_scoring_unchanged(calibrated: dict | None, now: dict, run: RunDir) -> None:
    """A calibration holds statistics of the maps as the scoring config made them; after an edit of that config
    (another window, blur, weight) they describe other maps, and scores would be silently off."""
    if calibrated is None:  # calibrated before calibration.json recorded its scoring: nothing to compare
        return
    # Only the options both know: one added to the config since (at its default, which is what the run had)
    # must not invalidate every calibration made before it.
    shared = (calibrated.keys() & now.keys()) - UNCALIBRATED_OPTIONS
    changed = sorted(k for k in shared if calibrated[k] != now[k])
    if changed:
        k = changed[0]
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise UserError(
            f"{run.root} was calibrated with scoring.{k}={calibrated.get(k)!r}, its config now has {now.get(k)!r}"
            f"{more}; run `edge-ad calibrate --run {run.root}` again"
        )


def apply_calibration(scorer: AnomalyScorer, calib: dict, run: RunDir, cfg: Config) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if calib["maps"] != scorer.names:
        needing = [m for m in calib["maps"] if m not in scorer.names and base_map(m) in PRIOR_MAPS]
        if scorer.prior is None and needing:
            raise UserError(
                f"{run.root} has no {run.prior.name}, and its calibration weights {', '.join(needing)}, which "
                f"need it: put the prior back, or score without it by `edge-ad calibrate --run {run.root}` again"
            )
        raise UserError(
            f"{run.root} was calibrated for the maps {calib['maps']}, its config now weights {scorer.names}; "
            f"run `edge-ad calibrate --run {run.root}` again"
        )
    check_scoring_unchanged(calib.get("scoring"), cfg.scoring.model_dump(mode="json"), run)
    areas = scorer.cfg_areas
    if calib.get("topk_areas", areas[:1]) != areas:
        raise UserError(
            f"{run.root} was calibrated for the frame-score areas {calib.get('topk_areas', areas[:1])}, its config "
            f"now has {areas}; run `edge-ad calibrate --run {run.root}` again"
        )
    try:
        norm = load_file(str(run.normalisation))
        for name in scorer.CALIBRATED:
            if name not in norm and name.startswith("area_") and len(areas) == 1:
                continue  # calibrated before areas existed: one area needs no statistics
            if name not in norm and name == "background" and "background" not in scorer.names:
                continue  # calibrated before the background map existed, and not weighting it
            getattr(scorer, name).copy_(norm[name])
    except (OSError, SafetensorError, KeyError, RuntimeError) as e:
        raise UserError(
            f"{run.normalisation} is missing or unreadable ({e}); run `edge-ad calibrate --run {run.root}` again"
        ) from None
    scorer.restore_threshold.fill_(calib["restore_threshold"])


def load_pipeline(run_dir: str | Path, calibrated: bool = True) -> tuple[Config, AnomalyPipeline, dict | None]:
    """(config, pipeline in eval mode, calibration dict or None)."""
    run = RunDir(Path(run_dir))
    cfg = run.load_config()
    vqvae, prior = load_models(run, cfg)
    scorer = AnomalyScorer(vqvae, prior, cfg)
    calib = None
    if calibrated and run.calibration.is_file():
        calib = checked_calibration(
            run.read_json("calibration"), str(run.calibration), f"run `edge-ad calibrate --run {run.root}` again"
        )
        apply_calibration(scorer, calib, run, cfg)
    return cfg, AnomalyPipeline(vqvae, prior, scorer).eval(), calib
