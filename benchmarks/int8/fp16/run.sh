#!/usr/bin/env bash
# fp32 vs fp16 vs int8 .tflite of the bundled default's largest and smallest subnet on
# tflite:cpu (LiteRT + XNNPACK, 1 thread), through the CLI: `export` writes each file (BN
# re-calibrated on Fashion-MNIST training images, int8 calibrated on them too), `bench` times
# all six under the shared measurement protocol. Usage (from the repo root; PYTHON names the
# interpreter, PYTHONPATH=$PWD to run a checkout):
#   bash benchmarks/int8/fp16/run.sh [OUT_DIR (default runs/fp16-bench)] [extra bench flags]
set -euo pipefail
OUT=${1:-runs/fp16-bench}
shift || true
PY=${PYTHON:-python}
HERE=benchmarks/int8/fp16
for arch in max min; do
  for prec in fp32 fp16 int8; do
    "$PY" -m ofa_deploy export --arch "$arch" --precision "$prec" --format tflite \
      --out "$OUT/$arch-$prec" >/dev/null
  done
done
echo "load before bench: $(cat /proc/loadavg)" | tee "$HERE/load.txt"
"$PY" -m ofa_deploy bench "$OUT" -d tflite:cpu --threads 1 --json "$HERE/results.json" \
  --markdown "$HERE/results.md" "$@"
echo "load after bench: $(cat /proc/loadavg)" | tee -a "$HERE/load.txt"
