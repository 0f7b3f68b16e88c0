"""benchmark_model's output formats, its command line, and the batch statistics."""
from __future__ import annotations

import shlex

import numpy as np
import pytest

from profilers.benchmark_model import (BenchmarkParseError, build_command, combine_batches,
                                       parse_benchmark_output)

CURRENT = """\
INFO: STARTING!\r
INFO: Log parameter values verbosely: [0]\r
INFO: Num threads: [4]\r
INFO: Graph: [/data/local/tmp/ofa-deploy/tmp/op.tflite]\r
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\r
INFO: The input model file size (MB): 0.012\r
INFO: Initialized session in 4.53ms.\r
INFO: Running benchmark for at least 1 iterations and at least 0 seconds but terminate if exceeding 150 seconds.\r
INFO: count=1 curr=2350\r
\r
INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.\r
INFO: count=50 first=3135 curr=3184 min=3124 max=3465 avg=3193.5 std=47\r
\r
INFO: Inference timings in us: Init: 4530, First inference: 2350, Warmup (avg): 2350, Inference (avg): 3193.5\r
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE\r
INFO: Memory footprint delta from the start of the tool (MB): init=2.1 overall=2.4\r
"""


def test_current_format():
    o = parse_benchmark_output(CURRENT)
    assert o.format == "current"
    assert o.inference_avg_us == 3193.5
    assert (o.inference.count, o.inference.min_us, o.inference.max_us, o.inference.std_us) == \
        (50, 3124, 3465, 47)
    assert o.warmup.count == 1 and o.warmup.avg_us == 2350
    assert (o.init_us, o.first_inference_us, o.warmup_avg_us) == (4530, 2350, 2350)


@pytest.mark.parametrize("summary", [
    "Average inference timings in us: Warmup: 146161, Init: 4452, Inference: 137722",
    "Average inference timings in us: Warmup: 146161, Init: 4452, no stats: 137722",
])
def test_legacy_formats(summary):
    text = ("Initialized session in 4.452ms\nRunning benchmark for 1 iterations\n"
            "count=1 curr=146161\n\nRunning benchmark for 50 iterations\n"
            "count=50 first=137789 curr=137254 min=137079 max=143416 avg=1.37722e+05 std=896\n\n"
            + summary + "\n")
    o = parse_benchmark_output(text)
    assert o.format == "legacy" and o.first_inference_us is None
    assert o.inference_avg_us == pytest.approx(137722)
    assert o.inference.std_us == 896 and o.warmup_avg_us == 146161 and o.init_us == 4452


def test_all_same_and_summary_only():
    o = parse_benchmark_output("count=3 curr=7(all same)\ncount=5 curr=9(all same)\n"
                               "Inference timings in us: Init: 1, First inference: 7, "
                               "Warmup (avg): 7, Inference (avg): 9")
    assert o.inference.count == 5 and o.inference.std_us == 0 and o.inference_avg_us == 9
    # No count= lines at all (a trimmed log): the summary's mean is still usable.
    o = parse_benchmark_output("Inference timings in us: Init: 1, First inference: 2, "
                               "Warmup (avg): 2, Inference (avg): 1.5e+03")
    assert o.inference is None and o.inference_avg_us == 1500


@pytest.mark.parametrize("text,needle", [
    ("INFO: STARTING!\nERROR: Unconsumed cmdline flags: --bogus=1\n", "Unconsumed cmdline flags"),
    ("/system/bin/sh: /data/local/tmp/bm: not executable: 64-bit ELF file\n", "not executable"),
    ("", "no output"),
])
def test_failures_quote_the_device(text, needle):
    with pytest.raises(BenchmarkParseError, match="no inference timings") as ei:
        parse_benchmark_output(text)
    assert needle in str(ei.value)


def test_zero_timed_runs_is_an_error():
    with pytest.raises(BenchmarkParseError, match="no timed runs"):
        parse_benchmark_output("count=1 curr=5\ncount=0\nInference timings in us: Init: 1, "
                               "First inference: 5, Warmup (avg): 5, Inference (avg): nan")


def test_command_quotes_every_path():
    cmd = build_command("/data/local/tmp/o d/bin/benchmark_model-abc",
                        "/data/local/tmp/o d/it's; rm -rf x.tflite", threads=4, warmup=3,
                        runs=10, affinity="f0", extra_args=["--use_xnnpack=true"])
    argv = shlex.split(cmd)
    assert argv == ["taskset", "f0", "/data/local/tmp/o d/bin/benchmark_model-abc",
                    "--graph=/data/local/tmp/o d/it's; rm -rf x.tflite", "--num_threads=4",
                    "--warmup_runs=3", "--warmup_min_secs=0", "--num_runs=10", "--min_secs=0",
                    "--use_xnnpack=true"]
    assert not build_command("b", "g", threads=1, warmup=0, runs=1).startswith("taskset")


def _batch(samples):
    a = np.asarray(samples, dtype=float)
    line = (f"count={a.size} first={a[0]:.0f} curr={a[-1]:.0f} min={a.min():.0f} "
            f"max={a.max():.0f} avg={float(a.mean())!r} std={float(a.std())!r}")
    return parse_benchmark_output(f"count=1 curr=1\n{line}\nInference timings in us: Init: 1, "
                                  f"First inference: 1, Warmup (avg): 1, Inference (avg): "
                                  f"{float(a.mean())!r}")


def test_combine_batches_median_of_means_and_pooled_std():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 30, size=n) for loc, n in [(1000, 20), (1100, 20), (1050, 30)]]
    stats, meta = combine_batches([_batch(b) for b in batches])
    means = [b.mean() for b in batches]
    assert stats.median_ms == pytest.approx(np.median(means) / 1e3)
    assert stats.p10_ms == pytest.approx(np.percentile(means, 10) / 1e3)
    assert stats.p90_ms == pytest.approx(np.percentile(means, 90) / 1e3)
    # Pooled std over every timed run equals the std of all samples together.
    assert stats.std_ms == pytest.approx(np.concatenate(batches).std() / 1e3, rel=1e-9)
    assert stats.runs == 70
    assert meta["batches"] == 3 and meta["min_ms"] == pytest.approx(
        np.concatenate(batches).min().round() / 1e3)
    assert meta["drift"] == pytest.approx((means[2] - means[0]) / np.median(means))
    assert meta["drifted"] is False


def test_single_batch_and_drift_flag():
    stats, meta = combine_batches([_batch([100, 110, 120])])
    assert stats.median_ms == stats.p10_ms == stats.p90_ms == pytest.approx(0.110)
    assert meta["drift"] == 0.0
    _, meta = combine_batches([_batch([100, 101]), _batch([120, 121]), _batch([140, 141])],
                              drift_tolerance=0.1)
    assert meta["drifted"] is True and meta["drift"] > 0.3
