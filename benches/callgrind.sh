#!/usr/bin/env bash
# Instructions per call of every micro-benchmark case, counted by callgrind: exact and
# repeatable, where wall-clock medians move with whatever else the machine runs.
#
#   benches/callgrind.sh              all cases, N=1000 calls each
#   benches/callgrind.sh classify     cases whose name contains "classify"
#   N=200 benches/callgrind.sh
#
# The driver is examples/microprofile.rs, built with the release profile (the one the wasm
# ships with) but with symbols kept, so callgrind_annotate can name functions. Only the
# `measured` loop is collected; the per-case profiles stay in target/microprofile/ for
#   callgrind_annotate target/microprofile/<case>.out
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-1000}"
FILTER="${1:-}"
OUT=target/microprofile
BIN=target/profiling/examples/microprofile

command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --quiet --example microprofile --profile profiling \
  --config 'profile.profiling.inherits="release"' \
  --config 'profile.profiling.strip=false' \
  --config 'profile.profiling.debug="line-tables-only"'
mkdir -p "$OUT"

printf '%-48s %14s\n' case instructions/call
for case in $("$BIN"); do
  [[ "$case" == *"$FILTER"* ]] || continue
  file="$OUT/${case//\//__}.out"
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*microprofile::measured*' \
    --callgrind-out-file="$file" "$BIN" "$case" "$N" 2>/dev/null
  total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file")
  printf '%-48s %14s\n' "$case" "$((total / N))"
done
