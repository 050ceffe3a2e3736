"""One method's numbers on one test set, as the report and the terminal table show them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ScoreSummary:
    """Every score is a fraction in [0, 1] (EERs: lower is better), or None when the test set cannot give it
    (e.g. no masks for pixel scores); ``notes`` says why for each None."""

    method: str
    frames: int
    clips: int
    anomalous_frames: int
    seconds: float
    frame_auroc: float | None = None
    frame_eer: float | None = None
    pixel_auroc: float | None = None
    pixel_auroc_sampled: bool = False
    pixel_count: int = 0
    pixel_used: int = 0
    aupro: float | None = None
    aupro_fpr_limit: float = 0.3
    ped1_eer: float | None = None
    ped1_auc: float | None = None
    ped1_anomalous_frames: int = 0
    ped1_normal_frames: int = 0
    notes: tuple[str, ...] = ()

    @property
    def fps(self) -> float | None:
        return self.frames / self.seconds if self.seconds > 0 else None

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d["fps"] = self.fps
        return d
