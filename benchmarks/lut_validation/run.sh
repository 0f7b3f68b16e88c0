#!/usr/bin/env bash
# Build CPU (onnxruntime) latency tables and validate them against whole subnets, with the
# shared measurement protocol's defaults, as a user runs them.
# Usage: benchmarks/lut_validation/run.sh [tiny|w10|all]   (from the repository root)
#
# Defaults: the protocol's (median of pooled runs, warm cache, 1 thread, 5 rounds over the
# ops, 15 over whole networks), `profile`'s calibration on 20 subnets, `lut validate
# --samples 30`. The op-model cache is the user's (OFA_DEPLOY_HOME), so the build time is
# the timing, not the one-off conversion; COLD=1 uses a fresh cache (conversions timed too).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=benchmarks/lut_validation
OFA=${OFA:-.venv/bin/ofa-deploy}
WHICH=${1:-all}
SAMPLES=${SAMPLES:-30}
CACHE_ARGS=()
if [[ ${COLD:-0} == 1 ]]; then
  CACHE=$(mktemp -d /tmp/ofa-lut-bench-cache.XXXXXX)
  trap 'rm -rf "$CACHE"' EXIT
  CACHE_ARGS=(--cache-dir "$CACHE")
fi
mkdir -p "$HERE/tables" "$HERE/results"

bench() {  # name space resolutions
  local name=$1 space=$2 res=$3
  local table="$HERE/tables/cpu-$space.json"
  rm -f "$table" "$table.raw"
  $OFA profile --device cpu --space "$space" --resolutions "$res" "${CACHE_ARGS[@]}" \
      --out "$table" --quiet --json > "$HERE/results/$name-profile.json"
  $OFA lut validate --lut "$table" --device cpu --samples "$SAMPLES" --seed 0 --quiet --json \
      --plot "$HERE/results/$name-validate.png" --out "$HERE/results/$name-validate.json" \
      > /dev/null
  rm -f "$table.raw"
}

case $WHICH in tiny|w10|all) ;; *) echo "usage: $0 [tiny|w10|all]" >&2; exit 2 ;; esac
if [[ $WHICH == tiny || $WHICH == all ]]; then bench tiny ofa-mbv3-tiny all; fi
if [[ $WHICH == w10 || $WHICH == all ]]; then bench w10 ofa-mbv3-w1.0 160,192,224; fi
chmod 644 "$HERE"/results/* "$HERE"/tables/* 2>/dev/null || true
.venv/bin/python "$HERE/report.py" > "$HERE/README.md"
