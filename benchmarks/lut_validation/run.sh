#!/usr/bin/env bash
# Build CPU (onnxruntime) latency tables and validate them against whole subnets.
# Usage: benchmarks/lut_validation/run.sh [tiny|w10|all]   (from the repository root)
#
# Timing uses one onnxruntime thread (--threads 1) so a 2-core machine keeps a core for the
# converter process and the rest of the system. A cold op-model cache is used on purpose, so
# the recorded build time includes converting every op model.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=benchmarks/lut_validation
OFA=${OFA:-.venv/bin/ofa-deploy}
WHICH=${1:-all}
RUNS=${RUNS:-15}
ROUNDS=${ROUNDS:-10}
VROUNDS=${VROUNDS:-10}
SAMPLES=${SAMPLES:-40}
CACHE=$(mktemp -d /tmp/ofa-lut-bench-cache.XXXXXX)
trap 'rm -rf "$CACHE"' EXIT
mkdir -p "$HERE/tables" "$HERE/results"

bench() {  # name space resolutions
  local name=$1 space=$2 res=$3
  local table="$HERE/tables/cpu-$space.json"
  rm -f "$table" "$table.raw"
  $OFA profile --device cpu --space "$space" --resolutions "$res" --threads 1 \
      --runs "$RUNS" --rounds "$ROUNDS" --cache-dir "$CACHE" --out "$table" --quiet --json \
      > "$HERE/results/$name-profile.json"
  $OFA lut validate --lut "$table" --device cpu --samples "$SAMPLES" --seed 0 \
      --rounds "$VROUNDS" --quiet --json \
      --plot "$HERE/results/$name-validate.png" --out "$HERE/results/$name-validate.json" \
      > /dev/null
  rm -f "$table.raw"
}

case $WHICH in tiny|w10|all) ;; *) echo "usage: $0 [tiny|w10|all]" >&2; exit 2 ;; esac
if [[ $WHICH == tiny || $WHICH == all ]]; then bench tiny ofa-mbv3-tiny all; fi
if [[ $WHICH == w10 || $WHICH == all ]]; then bench w10 ofa-mbv3-w1.0 160,192,224; fi
chmod 644 "$HERE"/results/* "$HERE"/tables/* 2>/dev/null || true
.venv/bin/python "$HERE/report.py" > "$HERE/README.md"
