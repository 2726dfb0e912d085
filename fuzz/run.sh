#!/usr/bin/env bash
# Runs the fuzz targets one after the other for SECONDS each and prints, per target, the
# executions, the corpus size and any crash with its artifact. Fails if any target crashed,
# after running the rest, so one finding does not hide another.
#
#   fuzz/run.sh SECONDS [TARGET...]        (all targets when none is named)
#
# CARGO_FUZZ: the cargo-fuzz binary (default .venv/bin/cargo-fuzz, what `make fuzz-tools` installs).
# FUZZ_SANITIZER: none (default) builds with stable Rust. The filter's own code is safe Rust:
# what fuzzing finds there is panics (indexing, arithmetic overflow with the debug assertions
# cargo-fuzz turns on, unwraps) and broken invariants, which need no sanitizer. `address`
# builds with the nightly toolchain, for the unsafe code inside dependencies.
#
# The committed seeds in fuzz/corpus/TARGET are read only: libFuzzer writes what it finds into
# its first corpus directory, here target/fuzz-corpus/TARGET, which later runs start from.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
cargo_fuzz=${CARGO_FUZZ:-.venv/bin/cargo-fuzz}
sanitizer=${FUZZ_SANITIZER:-none}
all=(config cookie classify string_match mirror_decision json_compare protobuf_compare)
targets=("${@:-${all[@]}}")

declare -A dict=(
  [config]=fuzz/dict/config.dict
  [json_compare]=fuzz/dict/json.dict
  [protobuf_compare]=fuzz/dict/protobuf.dict
  [classify]=fuzz/dict/http.dict
  [string_match]=fuzz/dict/regex.dict
  [mirror_decision]=fuzz/dict/http.dict
  [cookie]=fuzz/dict/http.dict
)

cargo=(cargo)
if [ "$sanitizer" != none ]; then
  cargo=(cargo +nightly)
fi
# cargo finds the `fuzz` subcommand as cargo-fuzz on PATH.
export PATH="$(cd "$(dirname "$cargo_fuzz")" && pwd):$PATH"

for t in "${targets[@]}"; do
  if [ -z "${dict[$t]:-}" ]; then
    echo "unknown fuzz target $t (known: ${all[*]})" >&2
    exit 2
  fi
done

"${cargo[@]}" fuzz build --sanitizer "$sanitizer"

logs=target/fuzz-logs
mkdir -p "$logs"
summary=()
failed=0
for t in "${targets[@]}"; do
  work=target/fuzz-corpus/$t
  mkdir -p "$work"
  echo "== fuzz $t for ${seconds}s"
  status=0
  # -timeout: an input that takes seconds is a finding too (a regex blow-up, a quadratic loop).
  "${cargo[@]}" fuzz run --sanitizer "$sanitizer" "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -dict="${dict[$t]}" -print_final_stats=1 \
    >"$logs/$t.log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  runs=${runs:-$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$logs/$t.log" | tail -1)}
  # libFuzzer's last status line: coverage features and the corpus it keeps (inputs/size).
  last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/\([0-9]*[a-zA-Z]*\).*/\1 inputs, \2/p' <<<"$last")
  line=$(printf '%-16s %10s executions in %ss, coverage %s, corpus %s' \
    "$t" "${runs:-?}" "$seconds" "${cov:-?}" "${corp:-?}")
  if [ "$status" -ne 0 ]; then
    failed=1
    # The panic or libFuzzer's error (timeout, out of memory), then cargo-fuzz's
    # reproduce and minimize commands; the whole run is in the log.
    sed -n -e '/panicked at\|^==[0-9]*== ERROR\|ERROR: libFuzzer/,/^stack backtrace:\|^SUMMARY/p' \
      -e '/^Failing input:/,/^Output of/p' -e '/^Reproduce with:/,/^Minimize/p' "$logs/$t.log" |
      grep -v '^\s*$\|^stack backtrace:\|^Output of\|^Minimize'
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$t.log" | tail -1)
    line="$line  FAILED (exit $status) artifact: ${artifact:-none, see $logs/$t.log}"
  fi
  echo "$line"
  summary+=("$line")
done

echo "== fuzz summary (${seconds}s per target, logs in $logs/)"
printf '%s\n' "${summary[@]}"
exit "$failed"
