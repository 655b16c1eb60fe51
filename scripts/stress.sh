#!/usr/bin/env bash
# The heavy stress run: many more pairs, rounds and messages than the quick size that
# `cargo test` runs, in release: the peer stress suite, then the network soak (nodes keeping
# each other connected while one at a time is restarted). Pass SYNCPEER_SEED=n to repeat a
# run (the seed is printed).
#
#   bash scripts/stress.sh            # a few minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
SYNCPEER_STRESS=heavy cargo test --release --test stress --test network_soak -- --nocapture "$@"
# The same over Noise (every connection a Noise session), at the quick size.
SYNCPEER_SECURITY=noise cargo test --release --test stress --test network_soak -- --nocapture "$@"
