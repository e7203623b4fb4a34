#!/bin/sh
# Load benchmark of POST /v1/verify beside GET /healthz on one warm keypal server
# (10 000 keys, SQLite, loopback). See crates/keypal-server/benches/verify_load.rs.
#
#   scripts/load-verify.sh              server in the benchmark's process (own runtime)
#   scripts/load-verify.sh --process    server as a separate `keypal serve` process
#
# Settings come from the environment: KEYPAL_BENCH_KEYS, KEYPAL_BENCH_CONNECTIONS
# (e.g. 1,8,32), KEYPAL_BENCH_SECS, KEYPAL_BENCH_WARMUP_SECS, KEYPAL_BENCH_ROUNDS,
# KEYPAL_BENCH_CLIENT_THREADS, KEYPAL_BENCH_SERVER_THREADS.
set -eu
cd "$(dirname "$0")/.."

case "${1:-}" in
    --process)
        # The bench profile (release + line tables) shares its build with the benchmark.
        cargo build --profile bench -p keypal-cli
        target_dir=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
        KEYPAL_BENCH_SERVER_BIN="$target_dir/release/keypal" exec cargo bench -p keypal-server --bench verify_load
        ;;
    "")
        exec cargo bench -p keypal-server --bench verify_load
        ;;
    *)
        echo "usage: $0 [--process]" >&2
        exit 2
        ;;
esac
