#!/usr/bin/env bash
# Side-by-side benchmark of ballast against HAProxy and nginx on the shared rig (../shared/bench,
# or $BENCH_RIG), in one interleaved run. MODE picks the layer:
#   MODE=tcp   l4conn (new connection per request) and l4bw (iperf3 one stream): HAProxy `mode tcp`,
#              nginx `stream`; connection rate, throughput, CPU per 10k connections / per GB.
#   MODE=http  ka (keep-alive) and close (connection per request): HAProxy `mode http`, nginx
#              `proxy_pass`; requests/s, p50/p99, CPU per 10k requests.
# Ratios are against a direct connection and against HAProxy with the same thread count.
#
#   MODE=tcp bench/run.sh [RESULTS.md]     # ~4-5 minutes with the defaults below
#   REPS=3 DURATION=10 MODE=http bench/run.sh
#
# Needs: haproxy nginx libnginx-mod-stream wrk iperf3 python3 (apt). Builds ballast --release.
# All traffic stays on 127.0.0.1; every step is bounded by the rig's own timeouts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rig=${BENCH_RIG:-$root/../shared/bench}
[[ -x $rig/run.sh ]] || { echo "bench rig not found at $rig (set BENCH_RIG)" >&2; exit 1; }
case ${MODE:-tcp} in
  tcp) default_workloads="l4conn l4bw" ;;
  http) default_workloads="ka close" ;;
  *) echo "MODE must be tcp or http" >&2; exit 2 ;;
esac
(cd "$root" && cargo build --release --quiet)
export CANDIDATE_CMD="$root/target/release/ballast run -c {conf}"
export CANDIDATE_CONF="$here/ballast-conf.sh"
export CANDIDATE_MODES=${MODE:-tcp}
export WORKLOADS=${WORKLOADS:-$default_workloads}
export REPS=${REPS:-2}
export DURATION=${DURATION:-5}
exec "$rig/run.sh" "$@"
