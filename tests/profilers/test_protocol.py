"""The measurement protocol: one definition, pooled median, pinning that reaches the runtime's
worker threads, refusal to compare across protocols, noise warnings."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from profilers import get_profiler
from profilers.base import LatencyStats
from profilers.base import ProfilerError
from profilers.protocol import (ESTIMATORS, MeasurementProtocol, ProtocolMismatch, estimate,
                                measure_pooled, noise_warning, require_comparable)
from supernet.export import export_onnx


def _tasks() -> dict:
    """tid -> Cpus_allowed_list of every thread of this process."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith("Cpus_allowed_list:"):
                        out[int(tid)] = line.split(":", 1)[1].strip()
        except OSError:  # a thread that ended meanwhile
            pass
    return out


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU()).eval()
    return export_onnx(m, (1, 3, 32, 32), tmp_path_factory.mktemp("onnx") / "conv.onnx")


def test_protocol_state_round_trip_and_errors():
    p = MeasurementProtocol(estimator="median-pooled", runs=7, rounds=2, cache="cold",
                            flush_bytes=4096, threads=2, cpus=(1, 0))
    assert p.cpus == (0, 1)
    assert MeasurementProtocol.from_state(p.get_state()) == p
    assert MeasurementProtocol.of({"protocol": p.get_state()}) == p
    assert MeasurementProtocol.of({}) is None
    # warm never flushes: a flush size would be recorded but unused
    assert MeasurementProtocol(cache="warm", flush_bytes=99).flush_bytes == 0
    with pytest.raises(Exception, match="cache policy"):
        MeasurementProtocol(cache="tepid")
    with pytest.raises(Exception, match="unknown field"):
        MeasurementProtocol.from_state({**p.get_state(), "mystery": 1})
    assert "median of 2x7 pooled runs, cold cache" in p.describe()
    assert p.describe().endswith("whole networks: 15 rounds")
    assert p.for_networks().rounds == 15 and p.for_networks().runs == 7
    assert MeasurementProtocol(network_rounds=3).for_networks().rounds == 3
    with pytest.raises(Exception, match="network_rounds=0"):
        MeasurementProtocol(network_rounds=0)
    # the estimator is part of the recorded state and survives the round trip
    b = MeasurementProtocol(estimator="best-round-median", runs=4, rounds=3)
    assert b.get_state()["estimator"] == "best-round-median"
    assert MeasurementProtocol.from_state(b.get_state()) == b
    assert MeasurementProtocol.from_state(b.get_state()) != b.with_(estimator="median-pooled")
    assert "lowest of 3 round medians of 4 runs" in b.describe()
    assert MeasurementProtocol().estimator == "best-round-median"  # the default
    with pytest.raises(ProfilerError, match="unknown estimator 'mean'.*best-round-median"):
        MeasurementProtocol(estimator="mean")
    with pytest.raises(ProfilerError, match="unknown estimator"):
        MeasurementProtocol.from_state({**b.get_state(), "estimator": "min"})


def test_comparable_only_when_the_same_thing_is_measured():
    a = MeasurementProtocol(threads=1, estimator="median-pooled")
    require_comparable(a, a.with_(runs=3, rounds=1, warmup=0), "x", "y")  # precision only
    with pytest.raises(ProtocolMismatch, match=r"threads 1 vs 2") as ei:
        require_comparable(a, a.with_(threads=2), "the table", "this validation")
    assert "\n" not in str(ei.value)
    with pytest.raises(ProtocolMismatch, match="cache 'warm' vs 'cold'"):
        require_comparable(a, a.with_(cache="cold"), "a", "b")
    with pytest.raises(ProtocolMismatch, match="estimator 'median-pooled' vs "
                                               "'best-round-median'") as ei:
        require_comparable(a, a.with_(estimator="best-round-median"), "the table", "this run")
    assert "\n" not in str(ei.value)
    b = a.with_(estimator="best-round-median")
    require_comparable(b, b.with_(runs=3, rounds=2), "x", "y")  # same estimator: fine


class _Seq:
    """Profiler whose samples are scripted per call, to check pooling and interleaving."""

    def __init__(self):
        self.calls = []

    def measure_samples(self, art, shape):
        self.calls.append(art)
        # round k of item a: values k*10 + a
        k = sum(1 for c in self.calls if c == art)
        return [k * 10.0 + art] * 3


def test_measure_pooled_interleaves_and_pools_medians():
    prof = _Seq()
    st = measure_pooled(prof, [(1, (1,)), (2, (1,))],
                        MeasurementProtocol(estimator="median-pooled", rounds=3, runs=3))
    assert prof.calls == [1, 2, 1, 2, 1, 2]  # round-robin, not item-major
    # pooled over 3 rounds: 11, 21, 31 (x3) -> median 21, not the best round's 11
    assert st[0].median_ms == pytest.approx(21.0) and st[0].runs == 9
    assert st[1].median_ms == pytest.approx(22.0)

    class Summary:  # a backend with summary stats only: one median per round
        def measure(self, art, shape):
            return LatencyStats(5.0, 4.0, 6.0, 1.0, 10)

    st = measure_pooled(Summary(), [(0, (1,))], MeasurementProtocol(rounds=4))
    assert st[0].runs == 4 and st[0].median_ms == 5.0


class _Rounds:
    """Profiler whose every call returns the next scripted round of runs."""

    def __init__(self, rounds):
        self.rounds = list(rounds)

    def measure_samples(self, art, shape):
        return self.rounds.pop(0)


# three rounds with medians 3, 1 and 2 (a slow spell, a quiet one, one in between)
SCRIPT = [[2.5, 3.0, 3.5, 9.0], [0.9, 1.0, 1.1, 1.2], [1.8, 2.0, 2.2, 2.1]]


def test_best_round_median_is_the_lowest_round_median_with_pooled_noise():
    pooled = estimate(SCRIPT, "median-pooled")
    best = estimate(SCRIPT, "best-round-median")
    every = np.concatenate(SCRIPT)
    assert pooled.median_ms == pytest.approx(float(np.median(every)))  # 2.05
    assert best.median_ms == pytest.approx(1.05)  # round 2's median, not its best run 0.9
    # p10 / p90 / std / runs describe every run pooled under both estimators
    for st in (pooled, best):
        assert st.p10_ms == pytest.approx(float(np.percentile(every, 10)))
        assert st.p90_ms == pytest.approx(float(np.percentile(every, 90)))
        assert st.std_ms == pytest.approx(float(every.std())) and st.runs == 12
    # measure_pooled: the same numbers through the one code path, round by round
    st = measure_pooled(_Rounds(SCRIPT), [(0, (1,))],
                        MeasurementProtocol(estimator="best-round-median", rounds=3, runs=4))[0]
    assert st == best
    st = measure_pooled(_Rounds(SCRIPT), [(0, (1,))],
                        MeasurementProtocol(estimator="median-pooled", rounds=3, runs=4))[0]
    assert st == pooled
    # interleaved items keep their own rounds: item 0 gets rounds 1 and 3, item 1 round 2 and 4
    two = measure_pooled(_Rounds([[3.0], [7.0], [1.0], [5.0]]), [(0, (1,)), (1, (1,))],
                         MeasurementProtocol(estimator="best-round-median", rounds=2, runs=1))
    assert [s.median_ms for s in two] == [1.0, 5.0]

    class Summary:  # summary stats only: one median per round, the lowest wins
        def __init__(self):
            self.meds = [3.0, 1.0, 2.0]

        def measure(self, art, shape):
            return LatencyStats(self.meds.pop(0), 0.0, 9.0, 1.0, 10)

    st = measure_pooled(Summary(), [(0, (1,))],
                        MeasurementProtocol(estimator="best-round-median", rounds=3))[0]
    assert st.median_ms == 1.0 and st.runs == 3 and st.p90_ms == pytest.approx(2.8)
    with pytest.raises(ProfilerError, match="unknown estimator"):
        estimate(SCRIPT, "mean")
    with pytest.raises(ProfilerError, match="no latency samples"):
        estimate([[], []], "best-round-median")
    assert set(ESTIMATORS) == {"median-pooled", "best-round-median"}


def test_noise_warning_names_the_cause():
    assert noise_warning([0.01, 0.02, 0.03]) is None
    msg = noise_warning([0.2, 0.3, 0.25], max_cv=0.1, what="subnets")
    assert msg is not None and "subnets vary 25%" in msg and "\n" not in msg
    assert "load average" in msg or "other work" in msg


def test_profiler_follows_the_protocol(conv_onnx):
    p = MeasurementProtocol(runs=4, warmup=1, rounds=2, threads=1)
    prof = get_profiler("cpu", **p.profiler_kwargs("ort"))
    assert (prof.runs, prof.warmup, prof.threads, prof._flusher) == (4, 1, 1, None)
    s = measure_pooled(prof, [(conv_onnx, (1, 3, 32, 32))], p)[0]
    assert s.runs == 8 and s.median_ms > 0
    cold = get_profiler("cpu", **p.with_(cache="cold", flush_bytes=1 << 16)
                        .profiler_kwargs("ort"))
    assert cold._flusher is not None and cold._flusher.nbytes == 1 << 16


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2
                    or not os.path.isdir("/proc/self/task"),
                    reason="needs Linux with at least 2 usable CPUs")
def test_pinning_holds_for_the_runtimes_worker_threads(conv_onnx):
    allowed = sorted(os.sched_getaffinity(0))
    target = allowed[-1]
    before = _tasks()
    me = threading.get_native_id()
    seen = {}

    prof = get_profiler("cpu", threads=2, runs=2, warmup=0, cpus=[target], flush_bytes=0)

    def probe():  # runs inside the measurement, while the session and its pool exist
        seen.update(_tasks())

    prof._flusher = probe
    prof.measure(conv_onnx, (1, 3, 32, 32))
    workers = {t: a for t, a in seen.items() if t not in before}
    assert workers, "onnxruntime started no worker thread for 2 intra-op threads"
    assert all(a == str(target) for a in workers.values()), workers
    assert seen[me] == str(target)
    # the caller's affinity is restored afterwards
    assert sorted(os.sched_getaffinity(0)) == allowed
    assert _tasks()[me] == before[me]
