"""What a search returns."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import numpy as np

from supernet.arch import ArchConfig
from supernet.batch import ArchBatch
from supernet.space import Space

from .costs import CostModel
from .settings import Constraints, EvolutionConfig

if TYPE_CHECKING:  # for annotations only
    from .problem import _Problem


@dataclass
class SearchResult:
    """The best arch a search found, its predicted numbers, and how the search went."""

    space: Space
    constraints: Constraints
    arch: ArchConfig
    predicted_accuracy: float
    latency_ms: float | None
    macs: int
    params: int
    history: List[float]  # best predicted accuracy after generation i (0: initial population)
    population: ArchBatch  # final population, best first (a list of ResNetArch for ResNet spaces)
    population_scores: np.ndarray
    wall_seconds: float
    evaluations: int  # distinct archs the predictor scored
    method: str = "evolution"
    resolutions: Tuple[int, ...] = ()
    config: EvolutionConfig | None = None
    extra: Dict[str, Any] = field(default_factory=dict)
    # seconds since the search started when history[i] was reached (evolution only): how fast
    # a quality level is reached, beside the full run's wall time
    history_seconds: List[float] = field(default_factory=list)

    @property
    def predicted_latency_ms(self) -> float | None:
        """Alias of ``latency_ms`` (the table's prediction)."""
        return self.latency_ms

    def to_dict(self, *, with_history: bool = False) -> dict:
        """JSON-ready summary (the ``search --json`` keys), ``extra`` merged in."""
        d = {
            "space": self.space.name,
            "method": self.method,
            "constraints": self.constraints.to_dict(),
            "arch": self.arch.to_dict(),
            "arch_string": self.arch.to_string(self.space),
            "predicted_accuracy": self.predicted_accuracy,
            "predicted_latency_ms": self.latency_ms,
            "macs": self.macs,
            "params": self.params,
            "search_seconds": self.wall_seconds,
            "evaluations": self.evaluations,
            "resolutions": list(self.resolutions),
        }
        if self.config is not None:
            d["config"] = self.config.get_state()
        if with_history:
            d["history"] = list(self.history)
            if self.history_seconds:
                d["history_seconds"] = list(self.history_seconds)
        d.update(self.extra)
        return d


def _result(problem: _Problem, pool: np.ndarray, scores: np.ndarray, history: List[float],
            t0: float, evaluations: int, method: str, config=None) -> SearchResult:
    order = np.argsort(-scores, kind="stable")
    pool, scores = pool[order], scores[order]
    costs = problem.cost.costs(pool[:1])[0]
    batch = problem.cost.batch(pool)
    return SearchResult(
        space=problem.space, constraints=problem.constraints, arch=batch[0].to_archs()[0],
        predicted_accuracy=float(scores[0]),
        latency_ms=float(costs[0]) if problem.cost.has_latency else None,
        macs=int(round(costs[1])), params=int(round(costs[2])), history=history,
        population=batch, population_scores=scores, wall_seconds=time.perf_counter() - t0,
        evaluations=evaluations, method=method, resolutions=problem.resolutions, config=config)



def _genes_of(cost: CostModel, batch: ArchBatch) -> np.ndarray:
    """Gene matrix of a canonical batch produced by this cost model."""
    cols = [np.searchsorted(cost.kernel_values, batch.ks), np.searchsorted(cost.expand_values, batch.e),
            np.searchsorted(cost.depth_values, batch.d), np.searchsorted(cost.res_values, batch.r)[:, None]]
    return np.concatenate(cols, axis=1).astype(cost.dtype)


def _island_report(islands: List[float]) -> dict:
    """``islands`` (independent restarts run), ``island_best`` (each one's own best predicted
    accuracy, before the final local search) and ``island_spread`` (best minus worst of them;
    0 for one island): how much a single restart's result depends on its seed."""
    return {"islands": len(islands), "island_best": list(islands),
            "island_spread": float(max(islands) - min(islands))}
