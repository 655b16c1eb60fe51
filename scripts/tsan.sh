#!/usr/bin/env bash
# Runs the stress suite (quick size), the I/O-error path tests (tests/faults.rs), the
# hostile-input table (tests/hostile.rs) and the keyed queue's concurrency stress tests under
# ThreadSanitizer, on nightly with a std rebuilt with the sanitizer (-Zbuild-std; without it
# TSan reports false races inside std). Fails on any report.
#
# The goal is an empty suppressions file: scripts/tsan.supp is used only if it exists and is
# not empty, and every line in it needs a comment saying why the report is a false positive.
#
#   bash scripts/tsan.sh            # about 2.5 minutes on 2 cores from cold (build-std)
#   TSAN_TARGET_DIR=/tmp/t bash scripts/tsan.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
rustup component add rust-src --toolchain nightly >/dev/null

target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${TSAN_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/tsan}"
export RUSTFLAGS="-Zsanitizer=thread"
export RUSTDOCFLAGS="-Zsanitizer=thread"
tsan_options="halt_on_error=1 second_deadlock_stack=1 history_size=4"
if [[ -s scripts/tsan.supp ]]; then
  tsan_options+=" suppressions=$PWD/scripts/tsan.supp"
fi
export TSAN_OPTIONS="$tsan_options"
# The quick size: TSan slows the peers' threads 5 to 15 times.
unset SYNCPEER_STRESS

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
status=0
tsan_test() {
  cargo +nightly test -Zbuild-std --target "$target" "$@" 2>&1 | tee -a "$log" || status=1
}
# The stress suite, every I/O-error path, the hostile-input table and the lane (fast path
# against the mux, direct writes, inline handlers): all their tests.
tsan_test --test stress --test faults --test hostile --test peer_lane
# The keyed queue: only its concurrency stress tests (the rest are single-threaded).
tsan_test --test keyed -- no_wake_up_is_lost_under_concurrent_senders \
  every_message_is_received_or_reported_lost_under_overflow
if grep -q "WARNING: ThreadSanitizer" "$log"; then
  echo "tsan.sh: ThreadSanitizer reported a problem (see above)" >&2
  status=1
fi
if [[ $(grep -c "test result: ok" "$log") -ne 5 ]]; then
  echo "tsan.sh: not every test binary passed" >&2
  status=1
fi
echo "tsan.sh: finished in $((SECONDS - start)) s, status $status"
exit "$status"
