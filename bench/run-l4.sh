#!/usr/bin/env bash
# L4 (TCP) benchmark: ballast beside HAProxy `mode tcp` and nginx `stream`, in one interleaved run
# of the shared rig (../shared/bench, or $BENCH_RIG). Reports the new-connection rate (l4conn) and
# single-stream throughput (l4bw) with ratios against a direct connection and against HAProxy,
# plus CPU seconds of each proxy per 10k connections / per GB.
#
#   bench/run-l4.sh [RESULTS.md]          # ~4 minutes with the defaults below
#   REPS=3 DURATION=10 bench/run-l4.sh    # longer, steadier
#
# Needs: haproxy nginx libnginx-mod-stream wrk iperf3 python3 (apt). Builds ballast --release.
# All traffic stays on 127.0.0.1; every step is bounded by the rig's own timeouts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rig=${BENCH_RIG:-$root/../shared/bench}
[[ -x $rig/run.sh ]] || { echo "bench rig not found at $rig (set BENCH_RIG)" >&2; exit 1; }
(cd "$root" && cargo build --release --quiet)
export CANDIDATE_CMD="$root/target/release/ballast run -c {conf}"
export CANDIDATE_CONF="$here/ballast-conf.sh"
export CANDIDATE_MODES=tcp
export WORKLOADS=${WORKLOADS:-l4conn l4bw}
export REPS=${REPS:-2}
export DURATION=${DURATION:-5}
exec "$rig/run.sh" "$@"
