"""``search``: the most accurate subnet (as predicted) that meets a latency / MACs / params budget.

No supernet weights are needed: accuracy comes from a predictor, latency from a lookup table.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from supernet.errors import OfaDeployError

from ._common import (OutputPath, atomic_write_text, check_positive, config_option, emit,
                      given_flags, table)


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _budget_label(c) -> str:
    parts = []
    if c.get("max_latency_ms") is not None:
        parts.append(f"{c['max_latency_ms']:g} ms")
    if c.get("max_macs") is not None:
        parts.append(f"{c['max_macs'] / 1e6:g}M MACs")
    if c.get("max_params") is not None:
        parts.append(f"{c['max_params'] / 1e6:g}M params")
    return ", ".join(parts)


def _entry(res) -> dict:
    d = res.to_dict()
    d.pop("space", None)
    d.pop("config", None)
    d.pop("resolutions", None)
    return d


def _human(data: dict) -> str:
    head = (f"space {data['space']}  target {data['target'] or '-'}  predictor "
            f"{data['predictor']['format']} ({Path(data['predictor']['path']).name})  "
            f"{data['config'].get('islands', 1)} x {data['config']['population']} x "
            f"{data['config']['generations']} generations, "
            + (f"+ {cfg['aging_islands']} aging x {cfg['aging_generations']}"
               + (f" + merged x {cfg['merge_generations']}" if cfg.get("merge_generations")
                  else "") + ", "
               if (cfg := data["config"]).get("aging_islands") else "")
            + f"seed {data['config']['seed']}")
    lat = lambda e: "-" if e["predicted_latency_ms"] is None else \
        f"{e['predicted_latency_ms']:.2f} ms"
    if "pareto" in data:
        rows = [(_budget_label(e["constraints"]), _pct(e["predicted_accuracy"]), lat(e),
                 f"{e['macs'] / 1e6:.1f}M", f"{e['params'] / 1e6:.2f}M", e["arch"]["r"],
                 e["arch_string"]) for e in data["pareto"]]
        body = table(rows, ("budget", "pred. acc", "latency", "MACs", "params", "res", "arch"))
        return (f"{head}\n{body}\nsearch: {data['search_seconds_total']:.2f} s for "
                f"{len(rows)} budgets (one search each)")
    rows = [("budget", _budget_label(data["constraints"])),
            ("arch", data["arch_string"]),
            ("arch (json)", json.dumps(data["arch"])),
            ("predicted accuracy", _pct(data["predicted_accuracy"])),
            ("predicted latency", lat(data)),
            ("MACs", f"{data['macs']:,} ({data['macs'] / 1e6:.1f}M)"),
            ("params", f"{data['params']:,} ({data['params'] / 1e6:.2f}M)"),
            ("search", f"{data['search_seconds']:.2f} s, {data['evaluations']:,} archs scored")]
    return f"{head}\n{table(rows, ('field', 'value'))}"


@click.command()
@click.option("--space", required=True,
              help="Search space name (see `ofa-deploy spaces`).")
@click.option("--target", default=None, metavar="NAME|DEVICE",
              help="Latency target: a built-in table (note10) or a device spec whose table was "
                   "profiled (cpu, adb:NAME, ...).")
@click.option("--lut", type=click.Path(dir_okay=False), default=None,
              help="A latency table file (instead of looking one up from --target).")
@click.option("--ms", type=float, multiple=True, metavar="MS",
              help="Latency budget in ms; repeat for a Pareto front (one search per budget).")
@click.option("--mflops", type=float, default=None, metavar="N",
              help="MACs budget in millions (what the OFA papers call MFLOPs).")
@click.option("--params-m", type=float, default=None, metavar="N",
              help="Parameter budget in millions.")
@click.option("--predictor", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Accuracy predictor file (default: the one bundled for the space, if any).")
@click.option("--predictor-format", type=click.Choice(["auto", "ofa-reference", "ofa-deploy"]),
              default="auto", show_default=True, help="Format of --predictor.")
@click.option("--resolution", type=int, multiple=True, metavar="R",
              help="Input resolution(s) to search (default: those of the latency table).")
@click.option("--population", type=int, default=None,
              help="Archs per island.  [default: 200]")
@click.option("--generations", type=int, default=None,
              help="  [default: 75; ofa-resnet50: 80]")
@click.option("--islands", type=int, default=None,
              help="Independent populations evolved together; the best wins (1 and 100 x 500 "
                   "generations: the OFA reference's search). By default 8, halved to the "
                   "better 4 after 20 generations and to 3 after 40; "
                   "ofa-resnet50: 3, none dropped.  [default: 8]")
@click.option("--aging-islands", type=click.IntRange(min=0), default=None,
              help="Aging-evolution islands (tournament parents, the oldest die; 500 archs, "
                   "100 children x 250 generations each), then a merged aging island of 300 "
                   "generations started from the best archs of all islands, evolved beside "
                   "the others in a thread of their own: they reach the isolated best subnets "
                   "far more often (benchmarks/search_vs_reference, rounds 6-8). 0 for the "
                   "other islands alone (the search before round 7; a small search given by "
                   "--population/--generations still has one unless 0). MobileNet spaces "
                   "only.  "
                   "[default: 1; ofa-resnet50: 0]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=OutputPath("file"), default=None, metavar="FILE",
              help="Also write the result (the --json document) to FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--init-arch", "init_arch", multiple=True, metavar="ARCH",
              help="Start the search from this subnet too (repeatable): an arch string, JSON "
                   "or JSON file (e.g. a report.json or search --out), min/max, or a reference "
                   "net.config (file or directory). One over a budget is skipped there with a "
                   "warning; one at a resolution the search cannot score is an error.")
@config_option
def search(space, target, lut, ms, mflops, params_m, predictor, predictor_format, resolution,
           population, generations, islands, aging_islands, seed, out, as_json,
           init_arch) -> None:
    """Find the subnet with the best predicted accuracy within a budget.

    \b
    Examples:
      ofa-deploy search --space ofa-mbv3-w1.2 --target note10 --ms 30 --predictor acc_predictor.pth
      ofa-deploy search --space ofa-mbv3-w1.2 --target note10 --ms 15 --ms 25 --ms 40 --json
      ofa-deploy search --space ofa-mbv3-w1.2 --mflops 300 --predictor acc_predictor.pth

      ofa-deploy search --space ofa-resnet50 --mflops 2000 --predictor acc_predictor.pth

      ofa-deploy search --space ofa-resnet50 --target cpu --ms 40 --predictor acc_predictor.pth

    Several --ms give a Pareto front. --mflops/--params-m apply to every search.
    """
    from supernet.space import get_space

    from ..predictor_files import bundled_predictor_path, load_predictor
    from ..search import Constraints, EvolutionConfig, pareto_search

    # parameter names equal the option names, so --config files use the flags' spelling
    from supernet.resnet_space import RESNET_SPACES

    resnet = space in RESNET_SPACES
    if not resnet:
        space = get_space(space)  # an unknown space is the first thing to say
    if not ms and mflops is None and params_m is None:
        raise click.UsageError("give a budget: --ms, --mflops and/or --params-m")
    if ms and target is None and lut is None:
        raise click.UsageError("--ms needs a latency table: give --target or --lut")
    for v in ms:
        check_positive(v, "--ms")
    check_positive(mflops, "--mflops")
    check_positive(params_m, "--params-m")
    if resnet:
        if aging_islands:
            raise OfaDeployError("--aging-islands applies to MobileNet spaces only")
        return _search_resnet(space, target, lut, ms, mflops, params_m, predictor,
                              predictor_format, resolution, population, generations, islands,
                              seed, out, as_json, init_arch)

    config = EvolutionConfig(seed=seed, **given_flags(population=population,
                                                      generations=generations, islands=islands,
                                                      aging_islands=aging_islands))

    table_obj, target_label = None, target
    if lut is not None or target is not None:
        from luts.store import load_table

        table_obj = load_table(lut if lut is not None else target, space=space)
        if target_label is None:
            target_label = str(table_obj.meta.get("device") or Path(lut).stem)

    if predictor is None:
        bundled = bundled_predictor_path(space)
        if bundled is None:
            raise OfaDeployError(
                f"no accuracy predictor is bundled for space {space.name}; pass --predictor FILE "
                f"(an ofa-deploy predictor, or the OFA reference acc_predictor.pth for "
                f"ofa-mbv3-w1.2)")
        predictor = str(bundled)
    pred = load_predictor(predictor, space, format=predictor_format)

    seeds = _init_archs(init_arch, space)
    base = Constraints(max_macs=None if mflops is None else mflops * 1e6,
                       max_params=None if params_m is None else params_m * 1e6)
    budgets = [float(b) for b in dict.fromkeys(ms)] or [base]
    from ..search import SearchError
    from ..search.evolution import SeedArchError

    try:
        results = pareto_search(space, pred, budgets, config, latency_table=table_obj,
                                constraints=base, resolutions=list(resolution) or None,
                                seed_archs=[a for _, a in seeds] or None)
    except SeedArchError as exc:  # named by the flag's value, not the seed's position
        raise SearchError(f"--init-arch {seeds[exc.index][0]} {exc.reason}") from None
    _warn_unseeded(seeds, results)

    last = results[-1]
    data = {
        "space": space.name,
        "target": target_label,
        "predictor": {"path": str(predictor), "format": pred.source_format},
        "resolutions": list(last.resolutions),
        "config": config.get_state(),
        **_entry(last),
    }
    if seeds:
        data["init_archs"] = [{"source": t, "arch_string": a.to_string(space)} for t, a in seeds]
    if len(results) > 1:
        data["pareto"] = [_entry(r) for r in results]
        data["search_seconds_total"] = results[-1].extra.get(
            "front_seconds", sum(r.wall_seconds for r in results))
    _finish(data, out, as_json)


# ResNet search settings when no flag is given: its measured 3 x 200 x 80 (it has no island
# pruning); the MobileNet spaces take EvolutionConfig's defaults
RESNET_DEFAULT = {"population": 200, "generations": 80, "islands": 3, "prune_at": 0,
                  "aging_islands": 0}


def _search_resnet(name, target, lut, ms, mflops, params_m, predictor, predictor_format,
                   resolution, population, generations, islands, seed, out, as_json,
                   init_arch=()) -> None:
    """``search`` for a ResNet-family space (its own gene layout and cost grids); the same
    result keys as the MobileNet search, several --ms evolved one after another."""
    from ..predictor_files import load_predictor
    from ..accuracy_resnet import ResNetReferencePredictor, bundled_resnet_predictor_path
    from ..search import Constraints, EvolutionConfig
    from ..search.resnet import resnet_evolution_search
    from ..search import SearchError
    from ..search.evolution import SeedArchError

    table_obj, target_label = None, target
    if lut is not None or target is not None:
        from luts.store import load_table

        table_obj = load_table(lut if lut is not None else target, space=name)
        if target_label is None:
            target_label = str(table_obj.meta.get("device") or Path(lut).stem)
    config = EvolutionConfig(**{**RESNET_DEFAULT, "seed": seed,
                                **given_flags(population=population, generations=generations,
                                              islands=islands)})
    predictor = str(bundled_resnet_predictor_path() if predictor is None else predictor)
    # loaded without a space, so that another family's file is refused by the check below
    pred = load_predictor(predictor, None, format=predictor_format)
    if not isinstance(pred, ResNetReferencePredictor):
        raise OfaDeployError(f"{predictor} does not predict {name} subnets; give the OFA "
                             f"ResNet50 reference acc_predictor.pth (or omit --predictor)")
    seeds = _init_archs(init_arch, name, resnet=True)
    results = []
    for budget in [float(b) for b in dict.fromkeys(ms)] or [None]:
        cons = Constraints(max_latency_ms=budget,
                           max_macs=None if mflops is None else mflops * 1e6,
                           max_params=None if params_m is None else params_m * 1e6)
        try:
            results.append(resnet_evolution_search(name, pred, cons, config,
                                                   resolutions=list(resolution) or None,
                                                   latency_table=table_obj,
                                                   seed_archs=[a for _, a in seeds] or None))
        except SeedArchError as exc:  # named by the flag's value, not the seed's position
            raise SearchError(f"--init-arch {seeds[exc.index][0]} {exc.reason}") from None
    _warn_unseeded(seeds, results)
    res = results[-1]
    data = {"space": name, "target": target_label,
            "predictor": {"path": predictor, "format": pred.source_format},
            "resolutions": list(res.resolutions), "config": config.get_state(), **_entry(res)}
    if seeds:
        data["init_archs"] = [{"source": t, "arch_string": a.to_string(name)} for t, a in seeds]
    if len(results) > 1:
        data["pareto"] = [_entry(r) for r in results]
        data["search_seconds_total"] = sum(r.wall_seconds for r in results)
    _finish(data, out, as_json)


def _finish(data: dict, out, as_json: bool) -> None:
    """Print the result document (and write it to ``out``)."""
    from ..report import round_floats

    data = round_floats(data)  # 1.438, not 1.4380000000000002
    # the result is printed first: a write that fails anyway (disk full) loses nothing
    emit(data, as_json, _human)
    if out:
        try:
            atomic_write_text(out, json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            raise click.ClickException(f"cannot write --out {out}: {exc.strerror or exc} "
                                       f"(the result is printed above)") from None
        if not as_json:
            click.echo(f"wrote {out}", err=True)


def _init_archs(texts, space, resnet: bool = False) -> list:
    """``(text, arch)`` of every --init-arch, parsed as ``--arch`` is elsewhere (a net.config
    at any resolution: the search refuses one it cannot score, naming it)."""
    from supernet.arch import ArchConfig, ArchError
    from supernet.resnet_space import ResNetArch

    parse = ResNetArch.parse if resnet else ArchConfig.parse
    out = []
    for t in texts:
        try:
            out.append((t, parse(t, space)))
        except ArchError as exc:
            raise ArchError(f"--init-arch {t}: {exc}") from None
    return out


def _warn_unseeded(seeds: list, results) -> None:
    """One warning line per --init-arch that some budget could not start from (over it)."""
    for i, (text, _a) in enumerate(seeds):
        over = [r.constraints.describe() for r in results
                if i in r.extra.get("seeds_over_budget", ())]
        if over:
            click.echo(f"warning: --init-arch {text} is over the budget ({'; '.join(over)}); "
                       f"not seeded there", err=True)
