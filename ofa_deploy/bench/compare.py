"""Comparing with a baseline: reading an earlier ``--json`` file, matching its results to this
run's artifacts (see "Artifact identity" in :mod:`ofa_deploy.bench`) and judging regressions."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from profilers.base import DeviceSpec
from supernet.errors import OfaDeployError

from .artifacts import Artifact
from .errors import BenchError

__all__ = ["load_baseline", "match_baseline", "compare_latency"]


def load_baseline(path: "str | os.PathLike") -> List[Dict[str, Any]]:
    """Measured results of an earlier ``bench --json`` file (the same format)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"baseline {path} does not exist") from None
    except OSError as exc:
        raise BenchError(f"cannot read baseline {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise BenchError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), list):
        raise BenchError(f"baseline {path} is not an ofa-deploy bench file (no \"results\" list)")
    out = []
    for i, r in enumerate(data["results"]):
        if not isinstance(r, Mapping) or "artifact" not in r or "device" not in r:
            raise BenchError(f"baseline {path}: result {i} lacks \"artifact\"/\"device\"")
        if r.get("status", "ok") not in ("ok", "regressed") or r.get("median_ms") is None:
            continue
        try:
            med = float(r["median_ms"])
        except (TypeError, ValueError):
            raise BenchError(f"baseline {path}: result {i} has a bad median_ms "
                             f"{r['median_ms']!r}") from None
        if not med > 0:
            raise BenchError(f"baseline {path}: result {i} has a non-positive median_ms {med}")
        try:
            device = str(DeviceSpec.parse(str(r["device"])))
        except OfaDeployError:
            device = str(r["device"])
        out.append({**r, "median_ms": med, "device": device, "sha256": r.get("sha256")})
    return out


def match_baseline(artifacts: Sequence[Artifact], devices: Sequence[DeviceSpec],
                   baseline: Sequence[Mapping[str, Any]]
                   ) -> Tuple[Dict[Tuple[str, str, str], Tuple[Mapping[str, Any], str]],
                              List[Mapping[str, Any]]]:
    """``{(name, sha256, device): (baseline entry, how)}`` and the baseline entries left over."""
    matched: Dict[Tuple[str, str, str], Tuple[Mapping[str, Any], str]] = {}
    claimed: set = set()
    keys = [(a.name, a.sha256, str(d)) for a in artifacts for d in devices]
    name_count: Dict[Tuple[str, str], int] = {}
    for n, _, d in keys:
        name_count[(n, d)] = name_count.get((n, d), 0) + 1

    def take(key, how, pred):
        cands = [i for i, b in enumerate(baseline) if i not in claimed and b["device"] == key[2]
                 and pred(b)]
        if not cands:
            return
        if how == "name" and len(cands) != 1:
            return  # ambiguous: several baseline entries under this name
        # prefer the same file name for a moved file, then the first listed
        cands.sort(key=lambda i: (Path(str(baseline[i]["artifact"])).name
                                  != Path(key[0]).name, i))
        claimed.add(cands[0])
        matched[key] = (baseline[cands[0]], how)

    for key in keys:
        take(key, "exact", lambda b, k=key: b["artifact"] == k[0] and b.get("sha256") == k[1])
    for key in keys:
        if key not in matched:
            take(key, "sha256", lambda b, k=key: b.get("sha256") == k[1])
    # a re-exported file matched by name alone must be of the same precision: an int8 file
    # under an fp32 file's name is another model, not a regression or a speed-up of it
    precision = {(a.name, a.sha256): a.precision for a in artifacts}
    for key in keys:
        if key not in matched and name_count[(key[0], key[2])] == 1:
            take(key, "name", lambda b, k=key: b["artifact"] == k[0] and (
                b.get("precision") or "fp32") == precision[(k[0], k[1])])
    left = [b for i, b in enumerate(baseline) if i not in claimed
            and b["device"] in {str(d) for d in devices}]
    return matched, left


def compare_latency(median_ms: float, baseline_ms: float, tolerance_pct: float,
                    min_delta_ms: float = 0.0) -> Tuple[float, bool]:
    """``(delta_pct, regressed)``: regressed when slower than the baseline by more than
    ``tolerance_pct`` percent and, in absolute terms, by more than ``min_delta_ms``."""
    delta = median_ms - baseline_ms
    pct = 100.0 * delta / baseline_ms
    # the epsilon keeps a result exactly at the tolerance (1.1 ms vs 1.0 ms at 10%) passing
    return pct, bool(pct > tolerance_pct + 1e-9 and delta > min_delta_ms)
