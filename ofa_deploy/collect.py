"""Accuracy-predictor data: (arch, held-out accuracy) pairs, collected resumably.

Arch ``i`` is drawn from ``default_rng([seed, i])``, so any set of processes (``--shard K/N``
or ``--workers N``) collects the same archs as one process would, and a re-run skips the
indices already in the file. Lines are appended whole under an exclusive lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from supernet import ArchConfig
from supernet.errors import OfaDeployError

__all__ = ["arch_for_index", "read_records", "done_indices", "collect", "parse_shard"]


def arch_for_index(space, seed: int, index: int,
                   resolutions: Optional[Sequence[int]] = None) -> ArchConfig:
    """Arch number ``index`` of the collection with ``seed``: a function of (seed, index) alone, so
    shards and workers draw the same arch for one index."""
    return ArchConfig.sample(space, np.random.default_rng([seed, index]), resolutions=resolutions)


def read_records(path: "str | os.PathLike") -> List[dict]:
    """Every complete JSON line of ``path`` (a torn last line from a kill is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # partial line of an interrupted write; that index is redone
            if not isinstance(rec, dict) or "arch" not in rec or "accuracy" not in rec:
                raise OfaDeployError(f"{p}:{n} is not an accuracy record (needs arch, accuracy)")
            out.append(rec)
    return out


def done_indices(records: Iterable[dict], seed: int) -> set:
    """Indices of the records already collected with ``seed`` (records of other seeds are different
    archs and do not count)."""
    return {int(r["index"]) for r in records if r.get("seed") == seed and "index" in r}


def parse_shard(text: str) -> Tuple[int, int]:
    """``"K/N"`` as (K, N) with 0 <= K < N; raises :class:`OfaDeployError` for anything else."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise OfaDeployError(f"--shard must look like K/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise OfaDeployError(f"--shard {text}: need 0 <= K < N")
    return k, n


def _append(path: Path, rec: dict) -> None:
    line = (json.dumps(rec, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        end = os.lseek(fd, 0, os.SEEK_END)
        if end > 0 and os.pread(fd, 1, end - 1) != b"\n":
            # a kill mid-write left a torn line: end it, so this record stays readable
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def collect(net, dataset, out: "str | os.PathLike", *, samples: int, seed: int = 0,
            shard: Tuple[int, int] = (0, 1), resolutions: Optional[Sequence[int]] = None,
            calib_images: int = 1000, eval_images: Optional[int] = None, batch_size: int = 250,
            progress: Callable[[int, int], None] = lambda done, total: None) -> Dict[str, int]:
    """Evaluate archs ``0..samples-1`` of this shard that ``out`` does not hold yet."""
    from .evaluate import evaluate_arch

    space = net.space
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    have = done_indices(read_records(out), seed)
    k, n = shard
    todo = [i for i in range(samples) if i % n == k and i not in have]
    total = len(todo)
    for j, i in enumerate(todo):
        arch = arch_for_index(space, seed, i, resolutions)
        t0 = time.perf_counter()
        res = evaluate_arch(net, arch, dataset.holdout, dataset.train, calib_images=calib_images,
                            images=eval_images, batch_size=batch_size)
        _append(out, {"index": i, "seed": seed, "space": space.name, "arch": arch.to_dict(),
                      "arch_string": arch.to_string(space), "accuracy": res["accuracy"],
                      "samples": res["samples"], "seconds": round(time.perf_counter() - t0, 3)})
        progress(j + 1, total)
    return {"evaluated": total, "skipped": len(have), "shard": k, "shards": n}
