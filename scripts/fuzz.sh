#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets of `fuzz/` for a bounded time each; not part of CI.
#
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]
#   scripts/fuzz.sh              every target for 180 s
#   scripts/fuzz.sh 600 unpack_tar unpack_zip
#
# Toolchain: cargo-fuzz needs nightly-only flags (-Zsanitizer=address and friends). On a machine
# with only the stable toolchain this works with RUSTC_BOOTSTRAP=1, which lets stable rustc
# accept them:
#     cargo install cargo-fuzz            # once; v0.13 works
#     RUSTC_BOOTSTRAP=1 cargo fuzz run unpack_tar -- -max_total_time=60
# Set TOOLCHAIN=nightly to use a real nightly instead (`cargo +nightly fuzz ...`).
#
# Targets (see fuzz/fuzz_targets/):
#   unpack_tar, unpack_targz, unpack_zip  the unpacker on raw bytes
#   unpack_entries                        the unpacker on archives built from chosen dangerous
#                                         entries (`..`, absolute names, links to anywhere)
#   unpack_plain                          the plain-file path, with fuzzed names
#   config_parse, model_parsers           Config::parse; ids, enums, sizes, durations, names
# The unpacker targets check an oracle, not just "no panic": inspect and unpack agree, nothing
# appears outside the release folder, no release folder is left after a refusal, no symlink in
# an accepted release resolves outside it.
#
# Seeds come from fuzz/seeds/<target>/ (checked in); the growing corpus is fuzz/corpus/<target>/
# and crashes land in fuzz/artifacts/<target>/ (both ignored by git). A crash becomes a
# regression input: rerun the target on it with TDS_FUZZ_DUMP=<folder>, e.g.
#     TDS_FUZZ_DUMP=/tmp/d fuzz/target/x86_64-unknown-linux-gnu/release/unpack_entries <crash>
# which writes the artifact the oracle saw as /tmp/d/a.tar, a.tar.gz or a.zip; copy it to
# tests/data/fuzz/unpack_tar/, unpack_targz/ or unpack_zip/, where
# `cargo test --test integration archive::fuzz` replays it, and name a test after it.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${1:-180}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(unpack_tar unpack_targz unpack_zip unpack_entries unpack_plain config_parse model_parsers)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
if [ "${TOOLCHAIN:-}" = nightly ]; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

# Release build with debug assertions (cargo-fuzz's default) and AddressSanitizer.
"${fuzz[@]}" build -O

status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    echo "== $target for ${seconds}s"
    # -rss_limit_mb: a decompression bomb that is not stopped shows up as an out-of-memory crash.
    # -timeout: one input taking longer than 10 s is a hang (a bomb that is read to the end).
    if ! "${fuzz[@]}" run -O "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
        echo "!! $target found a crash: see fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit $status
