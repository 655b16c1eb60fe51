#!/usr/bin/env bash
# Runs each fuzz target briefly (FUZZ_SECONDS, default 20) from the committed seeds, on
# nightly with cargo-fuzz (installed from crates.io if missing). Fails on any crash, leak,
# timeout or out-of-memory; the reproducer is left in fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz-smoke.sh
#   FUZZ_SECONDS=300 bash scripts/fuzz-smoke.sh     # a longer run
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in frame_decoder reassembler noise_reader; do
  # The working corpus grows from the seeds; it is local (fuzz/corpus is ignored).
  mkdir -p "fuzz/corpus/$target"
  echo "fuzz-smoke.sh: $target for ${seconds} s"
  status=0
  cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|Done [0-9]+ runs)" "$log" || true
  if [[ $status -ne 0 ]]; then
    tail -n 60 "$log" >&2
    echo "fuzz-smoke.sh: $target found a problem; see fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "fuzz-smoke.sh: no findings"
