#!/bin/sh
# Builds every fuzz target with libFuzzer and runs each for a bounded time.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]     (default 30)
#
# Works on a stable toolchain: the coverage instrumentation is LLVM's SanitizerCoverage passes,
# asked for with stable -C flags, and libfuzzer-sys compiles libFuzzer itself with the system
# C++ compiler (g++). No address sanitizer (that needs nightly's -Zsanitizer); overflow checks
# and debug assertions stay on. An explicit --target keeps the instrumentation off build
# scripts. New inputs go to a scratch folder, so the committed seed corpus stays as it is;
# a crash is saved under fuzz/artifacts/ and makes this script fail.
set -eu

PER_TARGET=${1:-30}
cd "$(dirname "$0")"

TARGETS="rgb_stream rgba_stream rebuild_pdf qrexec_message"
# CI keeps the build outside the checkout (FUZZ_TARGET_DIR), since the first one is slow.
TARGET_DIR=${FUZZ_TARGET_DIR:-target}
export CARGO_TARGET_DIR="$TARGET_DIR"
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')

RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
export RUSTFLAGS

cargo build --release --target "$TRIPLE" --bins -j 2

mkdir -p artifacts
for target in $TARGETS; do
    scratch=$(mktemp -d)
    echo "fuzz: $target for ${PER_TARGET}s"
    status=0
    "$TARGET_DIR/$TRIPLE/release/$target" \
        -max_total_time="$PER_TARGET" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target-" \
        "$scratch" "corpus/$target" 2>"$scratch.log" || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^(==|SUMMARY|ERROR)' "$scratch.log" || true
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$scratch.log"
        rm -f "$scratch.log"
        echo "fuzz: $target FAILED (exit $status); the input is in fuzz/artifacts/" >&2
        exit 1
    fi
    rm -f "$scratch.log"
done
echo "fuzz: every target ran ${PER_TARGET}s without a failure"
