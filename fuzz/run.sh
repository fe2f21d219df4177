#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: SECS seconds each (default 60).
#
#   fuzz/run.sh                 all targets
#   SECS=300 fuzz/run.sh nginx  one target, five minutes
#
# With a nightly toolchain and cargo-fuzz installed (`cargo install cargo-fuzz`) this is
# `cargo +nightly fuzz run TARGET fuzz/corpus/TARGET -- -max_total_time=SECS`; new inputs that
# libFuzzer finds go into the corpus directory (ignored by git: commit the ones worth keeping
# under a descriptive name) and crashes into fuzz/artifacts/TARGET/.
#
# Without them it says so and runs the deterministic replay in tests/fuzz_corpus.rs instead,
# with BALLAST_FUZZ_ITERS (default 20000) mutants per seed, and exits 0 if nothing panicked.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${SECS:-60}"
ALL=(config_toml keepalived nginx ipvsadm vrrp_packet proxy_protocol admin_body http_head)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo fuzz --version >/dev/null 2>&1; then
    for t in "${TARGETS[@]}"; do
        echo "== fuzz/run.sh: $t for ${SECS}s"
        cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1
    done
    exit 0
fi

echo "fuzz/run.sh: no nightly toolchain or no cargo-fuzz here: coverage-guided fuzzing is skipped."
echo "fuzz/run.sh: running the mutation replay of tests/fuzz_corpus.rs instead."
export BALLAST_FUZZ_ITERS="${BALLAST_FUZZ_ITERS:-20000}"
filters=()
for t in "${TARGETS[@]}"; do filters+=("${t}_corpus"); done
for f in "${filters[@]}"; do
    cargo test --release --test fuzz_corpus "$f" -- --nocapture 2>&1 | grep -E 'fuzz_corpus:|test result|panicked'
done
exit 0
