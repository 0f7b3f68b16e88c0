"""Search settings: the evolution hyper-parameters and the budgets an arch must meet."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from supernet.errors import OfaDeployError


class SearchError(OfaDeployError, ValueError):
    """Bad search settings (population, ratios, resolutions...)."""


class InfeasibleBudgetError(SearchError):
    """No subnet of the space can meet the budget; the message names the smallest value."""


def _check_int(name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise SearchError(f"{name} must be an integer, got {v!r}")
    if v < lo:
        raise SearchError(f"{name} must be >= {lo}, got {v}")


def _check_frac(name: str, v: Any, *, open_low: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise SearchError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v) or v > 1 or v < 0 or (open_low and v == 0):
        rng = "(0, 1]" if open_low else "[0, 1]"
        raise SearchError(f"{name} must be in {rng}, got {v}")


@dataclass(frozen=True)
class EvolutionConfig:
    """Hyper-parameters of :func:`evolution_search`.

    The variation rules and ratios are the OFA reference's. The default run is 8 independent
    islands of 200 archs x 75 generations, halved (by best arch so far) to the
    better 4 after 20 generations and to 3 after 40, chosen by measurement on the Note10 task
    (benchmarks/search_vs_reference/README.md, ab.py over seeds 0-9; 75 rather than 65
    generations since cheaper sampling and encoding paid for them, round 5): seeds converge to
    different basins, so at the same number of predictor evaluations, several large
    short-lived independent populations reach the best known subnet far more often than one
    population of 100 x 500 (the reference's own setting, still available as
    ``population=100, generations=500, islands=1``), and dropping the islands that lag early
    pays for more of them. Before the final local search the live islands' bests are
    relinked (``relink``: greedy paths between each pair, single-gene climbs from each path's
    best intermediate arch and from each island's best), which at ~3% more evaluations
    sometimes lands in a better basin than any island reached. ``population`` is per island.

    Beside them runs one island of aging evolution (``aging_islands``; Real et al.'s
    regularised evolution: tournament parents, the oldest arch dies; a pool of 500, 100
    children x 250 generations), then the *merged island*: one more aging island of 300
    generations (``merge_generations``) whose pool starts as the best 500 distinct archs of
    the aging island's final pool and of the truncation islands' pool at the same fraction of
    their run (after 34 of 75 generations). Each island ends in its own basin, and bred
    together their best archs reach subnets none of them did. Measured on the Note10 task
    (benchmarks/search_vs_reference/README.md, rounds 6-8): the aging island reaches isolated
    optima the truncation islands rarely do and is worse at 25 and 40 ms, and the merged
    island takes 50 ms from 16 to 20 of 20 seeds within 0.05 points of the best known, for
    less CPU than the 540 generations of aging it replaces. The truncation islands form one
    run, the aging and the merged island another (each from a Generator spawned off the
    seed's), so with ``threads`` = 2 they evolve in two threads at once: numpy's BLAS, most of
    a search, runs without the GIL, so on a machine with two free cores the search takes
    about the time of the longer part (0.7-0.8 s on the 2-core VM of the benchmark), and the
    result is the same for any ``threads``. ``aging_islands=0`` gives the truncation islands
    alone (the default before round 7, the same winner per seed as then), and
    ``aging_generations=540, merge_generations=0`` round 7's default."""

    population: int = 200
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    generations: int = 75
    seed: int = 0
    # None: mutate the resolution with ``mutate_prob``, as the reference's tutorial finder does
    resolution_mutate_prob: float | None = None
    # rounds of candidates for a child slot before it is left empty (see _Children)
    retry_rounds: int = 10
    # end with a steepest-ascent local search (single-gene, then gene-pair moves) from the best
    local_search: bool = True
    # independent populations (restarts) of ``population`` archs each, evolved in lock-step
    # (one predictor pass for all of them) on the same budget; the best over them wins
    islands: int = 8
    # successive halving of the islands: every ``prune_at`` generations (0: never) only the
    # better half of the live islands (by best arch so far) go on evolving, down
    # to ``keep_islands``; the pruned islands' generations are saved, not respent
    prune_at: int = 20
    keep_islands: int = 3
    # before the final local search, path relinking between the live islands' bests (see
    # search.local.relink_islands): with one island (or one left) it does nothing
    relink: bool = True
    # islands of aging evolution, a run of their own beside the ``islands`` above: each
    # keeps a pool of its newest ``aging_population`` archs, breeds ``offspring`` children per
    # generation for ``aging_generations`` generations from parents that win a ``tournament``
    # among random pool members, and the oldest die (never pruned)
    aging_islands: int = 1
    aging_population: int = 500
    offspring: int = 100
    tournament: int = 10
    aging_generations: int = 250
    # with aging islands: then one more aging island for this many generations (0: none),
    # its pool started as the best ``aging_population`` distinct archs of the aging islands'
    # final pools and of the truncation islands' pool at the same fraction of their run
    merge_generations: int = 300
    # with both kinds of island, the aging islands evolve in a thread of their own beside the
    # truncation islands (1: one after the other); the result is the same for any value
    threads: int = 2

    def __post_init__(self) -> None:
        _check_int("population", self.population, 2)
        _check_frac("parent_ratio", self.parent_ratio, open_low=True)
        _check_frac("mutation_ratio", self.mutation_ratio)
        _check_frac("mutate_prob", self.mutate_prob)
        if self.resolution_mutate_prob is not None:
            _check_frac("resolution_mutate_prob", self.resolution_mutate_prob)
        _check_int("generations", self.generations, 0)
        _check_int("seed", self.seed, 0)
        _check_int("retry_rounds", self.retry_rounds, 1)
        _check_int("islands", self.islands, 0)
        _check_int("prune_at", self.prune_at, 0)
        _check_int("keep_islands", self.keep_islands, 1)
        if not isinstance(self.local_search, bool):
            raise SearchError(f"local_search must be true or false, got {self.local_search!r}")
        _check_int("aging_islands", self.aging_islands, 0)
        _check_int("aging_population", self.aging_population, 2)
        _check_int("offspring", self.offspring, 1)
        _check_int("tournament", self.tournament, 1)
        _check_int("aging_generations", self.aging_generations, 0)
        _check_int("threads", self.threads, 1)
        _check_int("merge_generations", self.merge_generations, 0)
        if self.islands + self.aging_islands < 1:
            raise SearchError("islands must be >= 1 (or give aging_islands)")
        if not isinstance(self.relink, bool):
            raise SearchError(f"relink must be true or false, got {self.relink!r}")
        if self.num_parents < 1:
            raise SearchError(f"parent_ratio {self.parent_ratio} of population "
                              f"{self.population} leaves no parents")

    @property
    def num_parents(self) -> int:
        """Parents kept per generation (``parent_ratio`` of the population)."""
        return int(round(self.parent_ratio * self.population))

    @property
    def num_mutations(self) -> int:
        """Children per generation made by mutation (the rest by crossover)."""
        return int(round(self.mutation_ratio * self.population))

    @property
    def evaluations_budget(self) -> int:
        """Children generated in a whole run, over all islands (the reference, one island,
        scores exactly this many), aging islands included (their samples and children, and
        the merged island's children)."""
        merged = self.offspring * self.merge_generations if self.aging_islands else 0
        return (self.population * (self.generations + 1) * self.islands
                + self.aging_islands * (self.aging_population
                                        + self.offspring * self.aging_generations) + merged)

    def get_state(self) -> dict:
        """The settings as a plain dict (for JSON reports; see :meth:`from_state`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping) -> "EvolutionConfig":
        """Settings from :meth:`get_state`'s dict; unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(state) - names)
        if unknown:
            raise SearchError(f"unknown evolution setting(s): {', '.join(unknown)}")
        return cls(**dict(state))


def _check_limit(name: str, v: Any) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise SearchError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v) or v <= 0:
        raise SearchError(f"{name} must be a positive number, got {v}")


@dataclass(frozen=True)
class Constraints:
    """Upper bounds an arch must meet; any mix, None = unconstrained."""

    max_latency_ms: float | None = None
    max_macs: float | None = None
    max_params: float | None = None

    def __post_init__(self) -> None:
        _check_limit("max_latency_ms", self.max_latency_ms)
        _check_limit("max_macs", self.max_macs)
        _check_limit("max_params", self.max_params)

    def limits(self) -> np.ndarray:
        """(latency, MACs, params) bounds with +inf where unconstrained."""
        return np.array([math.inf if v is None else float(v)
                         for v in (self.max_latency_ms, self.max_macs, self.max_params)])

    def describe(self) -> str:
        """The budgets in words, e.g. ``latency <= 25 ms, MACs <= 300M``."""
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        if self.max_macs is not None:
            parts.append(f"MACs <= {self.max_macs / 1e6:g}M")
        if self.max_params is not None:
            parts.append(f"params <= {self.max_params / 1e6:g}M")
        return ", ".join(parts) or "unconstrained"

    def to_dict(self) -> dict:
        """The three bounds as a dict (None = unconstrained)."""
        return dataclasses.asdict(self)
