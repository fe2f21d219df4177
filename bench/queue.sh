#!/usr/bin/env bash
# Overload with a proxy-side queue, side by side: 500 concurrent HTTP clients (wrk -c500) against
# 3 servers that each take 10 requests at a time, through ballast (max_connections = 10,
# max_queue, queue_timeout) and HAProxy (server maxconn 10, timeout queue) with the same settings,
# and through nginx (max_conns=10, which has no queue in its open-source version) for contrast.
# Reports completed requests, failures (socket errors + non-2xx), req/s and p50/p99 latency.
#
#   bench/queue.sh            # DURATION=5 REPS=1; ~1 minute
#
# The proxy runs on CPU 0, wrk and the backends on CPU 1. Traffic stays on 127.0.0.1; every
# step is bounded by `timeout`. Needs haproxy nginx wrk (apt). Builds ballast --release.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rig=${BENCH_RIG:-$root/../shared/bench}
DURATION=${DURATION:-5}
REPS=${REPS:-1}
CONNS=${CONNS:-500}
MAXCONN=${MAXCONN:-10}
QUEUE_TIMEOUT_S=${QUEUE_TIMEOUT_S:-5}
BASE=${BASE:-19300}
LISTEN=$((BASE + 10))
work=$(mktemp -d -t ballast-queue.XXXXXX)
trap 'bash "$rig/backends.sh" stop "$work/be" >/dev/null 2>&1 || true; pkill -f "$work/" 2>/dev/null || true' EXIT

(cd "$root" && cargo build --release --quiet)
BACKEND_CPUS=1 bash "$rig/backends.sh" start 3 "$BASE" "$work/be" >/dev/null 2>&1
backends=("127.0.0.1:$BASE" "127.0.0.1:$((BASE + 1))" "127.0.0.1:$((BASE + 2))")

cat >"$work/ballast.toml" <<EOF
[global]
log_level = "error"
threads = 1
[[listener]]
name = "q"
bind = "127.0.0.1:$LISTEN"
protocol = "http"
upstream = "q"
workers = 1
backlog = 4096
[[upstream]]
name = "q"
scheduler = "rr"
keepalive_pool = 256
max_queue = 100000
queue_timeout = "${QUEUE_TIMEOUT_S}s"
EOF
for b in "${backends[@]}"; do
  printf '[[upstream.server]]\naddress = "%s"\nmax_connections = %s\n' "$b" "$MAXCONN" >>"$work/ballast.toml"
done

cat >"$work/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout queue ${QUEUE_TIMEOUT_S}s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$LISTEN
    default_backend be
backend be
    balance roundrobin
EOF
i=0
for b in "${backends[@]}"; do
  echo "    server s$i $b maxconn $MAXCONN" >>"$work/haproxy.cfg"
  i=$((i + 1))
done

cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err crit;
events { worker_connections 8000; }
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    upstream q {
$(for b in "${backends[@]}"; do echo "        server $b max_conns=$MAXCONN;"; done)
        keepalive 256;
    }
    server {
        listen 127.0.0.1:$LISTEN backlog=4096;
        location / { proxy_pass http://q; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF

start() {
  case $1 in
    ballast) taskset -c 0 "$root/target/release/ballast" run -c "$work/ballast.toml" >"$work/ballast.log" 2>&1 & ;;
    haproxy) taskset -c 0 haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & ;;
    nginx) taskset -c 0 nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$LISTEN/" && return 0
    sleep 0.1
  done
  echo "$1 did not come up" >&2
  return 1
}

printf '| proxy | completed | failed | req/s | p50 | p99 |\n|---|---|---|---|---|---|\n'
for rep in $(seq "$REPS"); do
  for sys in ballast haproxy nginx; do
    start "$sys"
    out=$(timeout $((DURATION + 30)) taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$LISTEN/" 2>&1 || true)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$out" >"$work/wrk-$sys-$rep.txt"
    done_=$(awk '/requests in/ {print $1}' <<<"$out")
    sock=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    failed=$(( ${sock:-0} + ${non2xx:-0} ))
    printf '| %s | %s | %s | %s | %s | %s |\n' "$sys" "$((done_ - failed))" "$failed" "$rps" "$p50" "$p99"
  done
done
echo "raw output in $work (removed on exit unless KEEP=1)" >&2
[[ ${KEEP:-0} == 1 ]] && trap - EXIT
