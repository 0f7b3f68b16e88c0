"""Converter worker process for the LUT builder (``python -m luts._convert_worker``).

Reads one JSON job per line on stdin, converts it, answers one JSON line. A plain subprocess
rather than multiprocessing: it works from any caller (no ``if __name__ == "__main__"`` guard
needed in user scripts) and it can lower its own priority, so on a small machine the timed
process wins the CPU whenever both want it.

Converters print (litert-torch's progress console, C++ logging) to file descriptors 1 and 2, so
the protocol runs on a private duplicate of stdout and fds 1/2 are pointed at /dev/null.
"""
from __future__ import annotations

import json
import os
import sys


def main(argv=None) -> int:
    """Serve conversion requests, one JSON line each on stdin, answering one JSON line each (``ok``
    and ``path``, or ``error``); stdout/stderr are silenced so converter logging cannot corrupt
    the replies. Returns the exit status."""
    args = json.loads((argv or sys.argv[1:] or ["{}"])[0])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if args.get("nice") and hasattr(os, "nice"):
        try:
            os.nice(int(args["nice"]))
        except OSError:
            pass
    cpus = args.get("cpus")
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass
    import torch

    torch.set_num_threads(1)
    from luts.convert import _Job, _convert
    from supernet.errors import first_line

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            job = _Job(req["what"], tuple(req["shape"]), req["space"], int(req["seed"]),
                       bool(req["context"]), str(req.get("precision", "fp32")))
            path = _convert(job, req["fmt"], req["path"])
            reply = {"ok": True, "path": path}
        except Exception as exc:  # reported to the parent, which raises it with context
            reply = {"ok": False, "error": first_line(exc, 500)}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
