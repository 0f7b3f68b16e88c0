"""What a run produces: one :class:`BenchResult` per (artifact, device) and the
:class:`BenchReport` holding them with the run's metadata, in the JSON layout of ``--json``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from profilers.base import LatencyStats
from profilers.protocol import cv_of

from .artifacts import Artifact

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "STATUSES", "IDENTITY_DOC", "BenchResult",
           "BenchReport"]

FORMAT_NAME = "ofa-deploy-bench"
FORMAT_VERSION = 1
STATUSES = ("ok", "regressed", "error", "skipped")
IDENTITY_DOC = ("artifact = path relative to the given root + sha256; baseline matched per "
                "device by (name, sha256), else sha256 alone (moved/renamed), else name alone "
                "(re-exported)")


@dataclass
class BenchResult:
    """The outcome of one (artifact, device) pair: ``ok``, ``regressed``, ``error`` or ``skipped``,
    with its stats, the baseline it was compared with, and why when not measured."""

    artifact: Artifact
    device: str
    status: str
    stats: Optional[LatencyStats] = None
    reason: Optional[str] = None
    profiler: Optional[Dict[str, Any]] = None
    elapsed_s: Optional[float] = None
    measured_at: Optional[str] = None
    baseline: Optional[Dict[str, Any]] = None
    resumed: bool = False

    @property
    def key(self) -> Tuple[str, str, str]:
        """``(artifact name, sha256, device)``: identifies the result within a run and across
        resumed runs."""
        return (self.artifact.name, self.artifact.sha256, self.device)

    def to_dict(self) -> Dict[str, Any]:
        """The result's record in the ``--json`` file; optional keys appear only when set."""
        a, s = self.artifact, self.stats
        d: Dict[str, Any] = {
            "artifact": a.name,
            "sha256": a.sha256,
            "device": self.device,
            "status": self.status,
            "median_ms": s.median_ms if s else None,
            "p10_ms": s.p10_ms if s else None,
            "p90_ms": s.p90_ms if s else None,
            "std_ms": s.std_ms if s else None,
            "runs": s.runs if s else None,
            # run-to-run variation of this measurement (robust CV, profilers.protocol.cv_of)
            "cv": cv_of(s) if s and s.median_ms > 0 else None,
            "format": a.format,
            "precision": a.precision,
            "input_shape": list(a.input_shape),
            "path": str(a.path),
            "root": str(a.root),
        }
        if a.label is not None:
            d["label"] = a.label
        if self.reason is not None:
            d["reason"] = self.reason
        if self.baseline is not None:
            d["baseline"] = self.baseline
        if self.profiler is not None:
            d["profiler"] = self.profiler
        if self.elapsed_s is not None:
            d["elapsed_s"] = round(self.elapsed_s, 3)
        if self.measured_at is not None:
            d["measured_at"] = self.measured_at
        if self.resumed:
            d["resumed"] = True
        if a.report:
            d["report"] = a.report
        return d


@dataclass
class BenchReport:
    """Every result of a run in artifact x device order, the run's metadata, and the baseline
    entries no result matched."""

    results: List[BenchResult]
    meta: Dict[str, Any]
    unmatched_baseline: List[Dict[str, Any]] = field(default_factory=list)

    def by_status(self, status: str) -> List[BenchResult]:
        """The results with ``status``, in report order."""
        return [r for r in self.results if r.status == status]

    @property
    def counts(self) -> Dict[str, int]:
        """How many results have each status (every status present, zero or not)."""
        return {s: len(self.by_status(s)) for s in STATUSES}

    @property
    def failed(self) -> bool:
        """Whether CI should fail: any regression or error (skipped pairs do not fail a run)."""
        return bool(self.by_status("regressed") or self.by_status("error"))

    def to_dict(self) -> Dict[str, Any]:
        """The ``--json`` file's object: ``results`` and ``meta`` (with counts and unmatched
        baseline entries)."""
        meta = dict(self.meta)
        meta["counts"] = self.counts
        if self.unmatched_baseline:
            meta["unmatched_baseline"] = self.unmatched_baseline
        return {"results": [r.to_dict() for r in self.results], "meta": meta}
