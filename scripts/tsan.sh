#!/usr/bin/env bash
# Runs the whole `cargo test` suite (unit, integration and doc tests; the stress suite at its
# quick size) under ThreadSanitizer, then the integration suites again with every connection
# over Noise (SYNCPEER_SECURITY=noise), on nightly with a std rebuilt with the sanitizer
# (-Zbuild-std; without it TSan reports false races inside std). Fails on any report.
# TSAN_SECURITY=plain or TSAN_SECURITY=noise runs one of the two passes only.
#
# The goal is an empty suppressions file: scripts/tsan.supp is used only if it exists and is
# not empty, and every line in it needs a comment saying why the report is a false positive.
#
#   bash scripts/tsan.sh            # about 2.5 minutes on 2 cores from cold (build-std), plus
#                                   # the Noise pass
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
# The quick size: TSan slows the peers' threads 5 to 15 times. SYNCPEER_TSAN makes the longest
# repeated scenarios (tests/peer_close.rs) run fewer rounds.
unset SYNCPEER_STRESS
export SYNCPEER_TSAN=1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
status=0
passes=${TSAN_SECURITY:-plain noise}
for security in $passes; do
  case "$security" in
    plain) unset SYNCPEER_SECURITY; args=() ;;
    noise) export SYNCPEER_SECURITY=noise; args=(--tests -p syncpeer) ;;
    *) echo "tsan.sh: TSAN_SECURITY=$security: expected plain or noise" >&2; exit 2 ;;
  esac
  echo "tsan.sh: pass $security"
  cargo +nightly test -Zbuild-std --target "$target" --no-fail-fast "${args[@]}" 2>&1 \
    | tee -a "$log" || status=1
done
if grep -q "WARNING: ThreadSanitizer" "$log"; then
  echo "tsan.sh: ThreadSanitizer reported a problem (see above)" >&2
  status=1
fi
if grep -q "test result: FAILED" "$log" || ! grep -q "test result: ok" "$log"; then
  echo "tsan.sh: not every test binary passed" >&2
  status=1
fi
echo "tsan.sh: finished in $((SECONDS - start)) s, status $status"
exit "$status"
