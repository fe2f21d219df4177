#!/usr/bin/env bash
# L7 (HTTP) benchmark: ballast beside HAProxy `mode http` and nginx `proxy_pass`, in one interleaved run
# of the shared rig (../shared/bench, or $BENCH_RIG). Reports requests/s with keep-alive (ka) and
# with a new client connection per request (close), p50/p99 latency, and proxy CPU seconds per
# 10k requests, as ratios against HAProxy and a direct connection.
#
#   bench/run-http.sh [RESULTS.md]          # ~4 minutes with the defaults below
#   REPS=3 DURATION=10 bench/run-http.sh    # longer, steadier
#
# Needs: haproxy nginx wrk iperf3 python3 (apt). Builds ballast --release.
# All traffic stays on 127.0.0.1; every step is bounded by the rig's own timeouts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rig=${BENCH_RIG:-$root/../shared/bench}
[[ -x $rig/run.sh ]] || { echo "bench rig not found at $rig (set BENCH_RIG)" >&2; exit 1; }
(cd "$root" && cargo build --release --quiet)
export CANDIDATE_CMD="$root/target/release/ballast run -c {conf}"
export CANDIDATE_CONF="$here/ballast-conf.sh"
export CANDIDATE_MODES=http
export WORKLOADS=${WORKLOADS:-ka close}
export REPS=${REPS:-2}
export DURATION=${DURATION:-5}
exec "$rig/run.sh" "$@"
