"""Benchmark exported artifacts on the devices attached here, compare with a baseline, report.

``bench`` measures every artifact (a ``.onnx`` or ``.tflite`` file, or a ``specialize`` output
directory holding ``model.onnx``/``model.tflite`` and ``report.json``) on every requested device
with the profilers' own measurement discipline (warm-up, repeated runs, median with p10/p90).

Artifact identity
    An artifact is identified by its path relative to the root it was found under (for a file
    given directly, its file name; for a directory, the path below that directory) together with
    the sha256 of its bytes. Baseline results are matched per device, in this order:

    1. same relative name and same sha256 (the same file, perhaps in a renamed root directory);
    2. same sha256 under another name (the file was moved or renamed);
    3. same relative name, different sha256 (the model was re-exported), only where that name is
       unambiguous on both sides.

    How each result matched is recorded in ``baseline.match`` (``exact``/``sha256``/``name``).

Scheduling
    Devices run in parallel, one measurement at a time per device. Backends that execute on this
    host's CPU (``ort:cpu``, ``tflite:cpu``) share one lane so they never time each other's load.

Failures
    A measurement that raises becomes an ``error`` result (never silently dropped). If the device
    is then found gone (an ADB device no longer ``online``), its remaining jobs are recorded as
    errors without being attempted. Results already measured are kept: the JSON file is rewritten
    atomically after every result, with ``meta.complete`` false until the run ends.

Modules: ``artifacts`` (finding and identifying artifacts), ``devices`` (checking ``--devices``,
lanes), ``compare`` (baseline matching, regressions), ``run`` (the lane workers), ``results``
(the result records), ``report`` (JSON, JUnit, Markdown, table rows).
"""
from .artifacts import (ARTIFACT_SUFFIXES, REPORT_NAME, Artifact, collect_artifacts,
                        read_input_shape, read_precision)
from .compare import compare_latency, load_baseline, match_baseline
from .devices import lane_of, resolve_devices
from .errors import BenchError
from .report import (RESULT_HEADERS, fmt_ms, fmt_pct, markdown_summary, regression_message,
                     result_rows, write_json, write_junit, write_markdown)
from .results import FORMAT_NAME, FORMAT_VERSION, STATUSES, BenchReport, BenchResult
from .run import run_bench

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ARTIFACT_SUFFIXES",
    "REPORT_NAME",
    "STATUSES",
    "BenchError",
    "Artifact",
    "BenchResult",
    "BenchReport",
    "collect_artifacts",
    "read_input_shape",
    "read_precision",
    "resolve_devices",
    "lane_of",
    "load_baseline",
    "match_baseline",
    "compare_latency",
    "run_bench",
    "write_json",
    "write_junit",
    "write_markdown",
    "markdown_summary",
    "result_rows",
    "regression_message",
    "RESULT_HEADERS",
    "fmt_ms",
    "fmt_pct",
]
