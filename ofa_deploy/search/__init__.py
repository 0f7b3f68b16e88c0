"""Evolutionary architecture search under latency / MACs / params budgets.

The algorithm is the OFA authors' regularised evolution (keep the best ``parent_ratio`` of the
population; make ``mutation_ratio`` of the next population by mutating a random parent, the
rest by uniform crossover of two random parents; children must meet the budget), run on whole
populations at once: a population is one integer matrix of choice indices, the budget check is
one gather over per-op cost tables, and the accuracy predictor scores every new child in one
forward pass. Two differences from the reference, both to spend the evaluation budget better,
neither changing what a generation can produce: parents are the best *distinct* archs (the
reference can fill its parent pool with clones of one arch), and a child identical to an arch
already scored is dropped instead of re-scored (the reference re-scores it; by the time it
reappears it has already lost its place among the parents).

Every sampling loop is bounded: a child slot that finds no feasible candidate within
``retry_rounds`` rounds stays empty (the reference would loop forever or fall back to a parent
copy, a duplicate), and the initial population is drawn by rejection in a bounded number of
large rounds, completed by *repair* (moving random genes to the cheapest choice until the arch
fits) when the budget is so tight that rejection finds too few. Budgets below the smallest
achievable value are refused before any search, naming that value.

By default a search runs several *islands* (``EvolutionConfig.islands``): independent
populations, each from its own random sample, evolved in lock-step so that one predictor pass
scores the children of all of them. Runs from different seeds converge to different basins of
the predictor's landscape; the best of a few large, short-lived independent populations finds
the best known subnet far more often than one long run with the same evaluations
(benchmarks/search_vs_reference/best_known.md); the default also halves the islands that lag
(``prune_at``), spending their generations on more starts. Results report every island's best
(``island_best``) and their range (``island_spread``). A Pareto front runs this search once
per budget (so each budget gets exactly the single search's quality), then lets a looser
budget take a tighter one's better winner. The predictor runs in numpy with one BLAS thread,
so a search needs no torch; where units of an MLP predictor are provably dead or linear over
the searched space, it scores with an exactly equivalent smaller network
(:mod:`.predictor_compression`).

The run ends with a steepest-ascent local search from the best arch (single-gene moves, then
gene pairs, within the budget; see :mod:`.local`), and every result reports whether its winner
is a local optimum (``local_optimum``, ``best_single_move_gain``).

Modules: :mod:`.settings` (config, budgets, errors), :mod:`.costs` (the cost model over gene
matrices), :mod:`.problem` (sampling, pricing, scoring, variation), :mod:`.evolution` (one
budget, random search), :mod:`.pareto` (fronts), :mod:`.local` (local search), :mod:`.results`,
:mod:`.predictor_compression` (exact compression of MLP predictors over the search domain).
"""
from .costs import QUANTITIES, CostModel
from .evolution import evolution_search, random_search
from .pareto import pareto_search
from .problem import _Problem, _single_thread_torch
from .results import SearchResult, _genes_of
from .settings import Constraints, EvolutionConfig, InfeasibleBudgetError, SearchError

__all__ = [
    "SearchError",
    "InfeasibleBudgetError",
    "EvolutionConfig",
    "Constraints",
    "SearchResult",
    "CostModel",
    "evolution_search",
    "pareto_search",
    "random_search",
]
