#!/bin/bash
# A/B of the two estimators (issue 10): one fresh ofa-mbv3-tiny cpu table per estimator
# (3 resolutions, default protocol otherwise), then `lut validate` on both in ABBA order on
# the same 30 subnets. Run it with nothing else on the machine; the log records the load.
#   bash benchmarks/latency_contract/estimator_ab/run.sh [OUT_DIR]   (PYTHON=... to pick one)
cd "$(dirname "$0")/../../.."
D=${1:-/tmp/estimator-ab}; mkdir -p "$D"
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 OFA_DEPLOY_HOME=$D/home
OFA="${PYTHON:-python} -m ofa_deploy"
for e in median-pooled best-round-median; do
  echo "$e build start $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$D/log"
  $OFA profile --device cpu --space ofa-mbv3-tiny --resolutions 32,48,64 --estimator $e \
    --cache-dir "$D/ops" --out "$D/t-$e.json" --quiet --json > "$D/p-$e.json" 2> "$D/p-$e.err"
done
n=0
for e in median-pooled best-round-median best-round-median median-pooled; do n=$((n+1))
  echo "$n $e validate start $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$D/log"
  $OFA lut validate --lut "$D/t-$e.json" --samples 30 --seed 0 --quiet --json \
    --out "$D/v$n-$e.json" > /dev/null 2> "$D/v$n.err"
done
echo "done $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$D/log"
