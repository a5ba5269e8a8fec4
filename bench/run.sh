#!/usr/bin/env bash
# The one command of the benchmark suite (issue 7): builds tds, the bench helpers and the bench
# binaries in release mode, runs every bench beside its peers (bench/suite.py), prints one table
# and regenerates BENCHMARKS.md.
#
#   bench/run.sh            everything, 5 rounds each (≈ 15 minutes with pueue)
#   bench/run.sh --quick    smoke mode for CI: tiny sizes, one round, no pueue (well under a
#                           minute after the build); writes target/bench/BENCHMARKS.quick.md
#   bench/run.sh --only overhead,logs [--rounds N] [--no-write] [--work DIR]
#
# Needs python3, xargs, curl, and wrk for the API bench (apt-get install wrk). pueue is used
# when `pueue` and `pueued` are on PATH or in $PUEUE_BIN (cargo install pueue --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building release binaries (tds, bench-hello, bench-seed)" >&2
cargo build --release --quiet --bin tds --example bench-hello --example bench-seed
exec python3 bench/suite.py "$@"
