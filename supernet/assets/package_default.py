"""Package a finished training run as the bundled default supernet, with its model card.

    python supernet/assets/package_default.py --run runs/default_ft --recipe "..." [--recipe ...]

Writes, next to this script:
- ``default-ofa-mbv3-tiny.pt``: fp16 weights; metadata = the run's (config, steps) plus
  ``card``: supernet params and, for the largest, middle and smallest subnets, their arch,
  params and MACs (tests recompute them);
- ``default-ofa-mbv3-tiny.test.json``: test-set accuracy of those subnets (``ofa-deploy eval``
  on all 10,000 Fashion-MNIST test images), a quick check (first 500 test images, 500
  calibration images) that the test suite re-runs, and the weight file's size and sha256.

Evaluation goes through the public CLI (``ofa-deploy eval --json``), exactly as a user runs it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from supernet.arch import ArchConfig  # noqa: E402
from supernet.checkpoint import load_supernet, save_supernet  # noqa: E402
from supernet.cost import arch_cost, supernet_params  # noqa: E402
from supernet.fileio import atomic_write_text, sha256_file  # noqa: E402

SPACE = "ofa-mbv3-tiny"
WEIGHTS = HERE / "default-ofa-mbv3-tiny.pt"
CARD = HERE / "default-ofa-mbv3-tiny.test.json"
MIDDLE = "r48-d3.3.3.3.3-k555.555.555.555.555-e444.444.444.444.444"
CHECK = {"images": 500, "calib_images": 500}


def subnets() -> dict:
    """The largest, a middle and the smallest subnet of the space, by name: the three the model card
    describes."""
    return {"largest": ArchConfig.max(SPACE), "middle": ArchConfig.from_string(MIDDLE, SPACE),
            "smallest": ArchConfig.min(SPACE)}


def evaluate(arch: str, extra=()) -> dict:
    """The JSON result of ``ofa-deploy eval`` on the packaged weights for compact arch string
    ``arch`` (``extra``: further CLI options); raises CalledProcessError when the CLI fails."""
    cmd = [sys.executable, "-m", "ofa_deploy", "eval", "--supernet", str(WEIGHTS), "--arch",
           arch, "--data", "fashion-mnist", "--json", *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv=None) -> None:
    """Write the fp16 weights with their model card and the accuracy file for the run in ``--run``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="run dir holding supernet.pt")
    ap.add_argument("--recipe", action="append", default=[], help="one line of how it was made")
    args = ap.parse_args(argv)

    net = load_supernet(args.run / "supernet.pt")
    card = {"space": SPACE, "supernet_params": supernet_params(SPACE), "subnets": {}}
    for name, arch in subnets().items():
        card["subnets"][name] = {"arch": arch.to_string(SPACE), **arch_cost(SPACE, arch)}
    meta = dict(net.checkpoint_metadata, recipe=args.recipe, card=card)
    save_supernet(net, WEIGHTS, half=True, metadata=meta)

    results = {}
    for name, arch in subnets().items():
        s = arch.to_string(SPACE)
        full = evaluate(s)
        quick = evaluate(s, ["--images", str(CHECK["images"]), "--calib-images",
                             str(CHECK["calib_images"])])
        results[name] = {"arch": s, "accuracy": full["accuracy"], "samples": full["samples"],
                         "calib_images": full["calib_images"],
                         "check": {**CHECK, "accuracy": quick["accuracy"]}}
        print(f"{name:8s} {s}: test accuracy {full['accuracy']:.4f} "
              f"(check {quick['accuracy']:.4f})", flush=True)
    doc = {
        "data": "fashion-mnist", "split": "test",
        "note": "ofa-deploy eval --supernet default --arch ARCH --data fashion-mnist --json "
                "(BN re-calibrated on held-out training images, fp16 weights); `check` is the "
                "same with --images 500 --calib-images 500, re-run by the tests",
        "weights": {"file": WEIGHTS.name, "bytes": WEIGHTS.stat().st_size,
                    "sha256": sha256_file(WEIGHTS)},
        "results": results,
    }
    atomic_write_text(CARD, json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
