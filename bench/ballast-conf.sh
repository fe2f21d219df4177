#!/usr/bin/env bash
# Config generator for ../shared/bench: prints a ballast TOML config from the BENCH_* environment
# the rig sets (BENCH_MODE, BENCH_PORT, BENCH_BACKENDS, BENCH_THREADS). Settings match what the
# rig gives HAProxy and nginx: round robin, same thread count, no per-connection logging,
# 60 s idle timeout; in http mode kept-alive server connections (256 idle per server, like the
# rig's nginx `keepalive 256`). Relay buffers are ballast's defaults (16 KiB growing to 256 KiB, then
# splice(2) for bulk directions) unless BALLAST_BUFFER_SIZE / BALLAST_SPLICE say otherwise:
#   BALLAST_BUFFER_SIZE=16KiB BALLAST_SPLICE=false   # the rig's settings for HAProxy and nginx
set -euo pipefail
case $BENCH_MODE in
  tcp|http) ;;
  *) echo "ballast-conf.sh: mode $BENCH_MODE not supported" >&2; exit 1 ;;
esac
cat <<CONF
[global]
log_level = "warn"
threads = $BENCH_THREADS

[[listener]]
name = "bench"
bind = "127.0.0.1:$BENCH_PORT"
protocol = "$BENCH_MODE"
upstream = "bench"
workers = $BENCH_THREADS
idle_timeout = "60s"
${BALLAST_BUFFER_SIZE:+buffer_size = \"$BALLAST_BUFFER_SIZE\"}
${BALLAST_SPLICE:+splice = $BALLAST_SPLICE}

[[upstream]]
name = "bench"
scheduler = "rr"
connect_timeout = "5s"
keepalive_pool = 256
CONF
IFS=, read -ra servers <<<"$BENCH_BACKENDS"
for s in "${servers[@]}"; do printf '\n[[upstream.server]]\naddress = "%s"\n' "$s"; done
