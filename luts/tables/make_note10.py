"""Regenerate the built-in Note10 table from the reference YAML files.

    python luts/tables/make_note10.py [SRC_DIR]    (default: tests/luts/data/ofa-note10-lut)

SRC_DIR holds ``{160,176,192,208,224}_lookup_table.yaml`` from han-cai/files (ofa/note10/,
commit a7c9bcd). The output is deterministic, so a rerun on the same files is a no-op.
"""
import sys
from pathlib import Path

from luts.reference import make_note10_table

ROOT = Path(__file__).resolve().parents[2]


def main(argv):
    """Rebuild the shipped note10 table from the reference's per-resolution LUT files (``argv[1]``,
    default the test data copy)."""
    src = Path(argv[1]) if len(argv) > 1 else ROOT / "tests" / "luts" / "data" / "ofa-note10-lut"
    out = Path(__file__).resolve().with_name("note10-ofa-mbv3-w1.2.json")
    table = make_note10_table(src)
    table.save(out)
    lo, hi = table.min_max()
    print(f"wrote {out}: {len(table.entries)} ops, {lo:.2f}..{hi:.2f} ms")


if __name__ == "__main__":
    main(sys.argv)
