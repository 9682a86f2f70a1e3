#!/usr/bin/env bash
# Real-model trace measurements for docs/traces.md (run once; CPU).
# OMP_NUM_THREADS=1: on a shared, oversubscribed CPU, torch's 2 spinning threads were
# 20-40x slower per decode step than 1 thread (see docs/traces.md).
set -euo pipefail
OUT=${1:-/tmp/traces_measure}
GSM8K=${GSM8K:-/work/shared/data/gsm8k/train.jsonl}
N_GSM_COT=${N_GSM_COT:-200}
mkdir -p "$OUT"
# (on the measuring run, the two GSM8K steps ran beside the arithmetic cot step)
export OMP_NUM_THREADS=1
PY=${PY:-/work/main/.venv/bin/python}
run() { echo "== $*"; /usr/bin/time -f "%e s wall" "$PY" -m mechreason traces --model smollm2-135m-instruct --seed 0 "$@"; }
run --task arithmetic --style direct --n 50 --max-new-tokens 32 --out "$OUT/arith.jsonl"
run --task arithmetic --style cot --n 50 --max-new-tokens 160 --out "$OUT/arith.jsonl"
run --task gsm8k --data-file "$GSM8K" --style direct --n 200 --max-new-tokens 24 --out "$OUT/gsm8k.jsonl"
run --task gsm8k --data-file "$GSM8K" --style cot --n "$N_GSM_COT" --max-new-tokens 200 --out "$OUT/gsm8k.jsonl"
run --task math --data-file tests/data/math_sample.jsonl --style direct --n 10 --max-new-tokens 32 --out "$OUT/math.jsonl"
run --task math --data-file tests/data/math_sample.jsonl --style cot --n 10 --max-new-tokens 160 --out "$OUT/math.jsonl"
