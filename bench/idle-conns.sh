#!/usr/bin/env bash
# Memory per idle client connection: N idle connections (default 100,000) through ballast, and
# through HAProxy and nginx when installed, in L4 (TCP relay to a silent backend) and L7 (HTTP
# keep-alive: one request answered, then the connection stays open). Prints the proxy's resident
# memory (VmRSS of its process tree) before and after, and KiB per connection.
#
#   bench/idle-conns.sh                 # N=100000, SYSTEMS="ballast haproxy nginx", MODES="tcp http"
#   N=20000 SYSTEMS=ballast bench/idle-conns.sh
#
# Clients come from 127.0.0.1-8 and TCP servers listen on 127.0.0.2-6, so source ports do not
# run out; descriptor limits are raised (needs root for a hard limit past the default). Each
# proxy runs one thread/worker. Traffic stays on 127.0.0.0/8; every step is bounded by
# `timeout`. Builds ballast --release. Takes a few minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rig=${BENCH_RIG:-$root/../shared/bench}
N=${N:-100000}
SYSTEMS=${SYSTEMS:-ballast haproxy nginx}
MODES=${MODES:-tcp http}
BASE=${BASE:-19400}
LISTEN=$((BASE + 10))
BE_TCP=$((BASE + 20))
BE_ADDRS=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6
work=$(mktemp -d -t ballast-idle.XXXXXX)
proxy_pid=
cleanup() {
  [[ -n $proxy_pid ]] && kill "$proxy_pid" 2>/dev/null || true
  bash "$rig/backends.sh" stop "$work/be" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# 2 descriptors per relayed connection in the proxy, 2 per connection in the driver (client and
# backend side), plus room. Without the right to raise the hard limit (CAP_SYS_RESOURCE), N is
# lowered to what it allows.
want=$((2 * N + 10000))
if [[ $(ulimit -Hn) != unlimited && $(ulimit -Hn) -lt $want ]]; then
  if ! ulimit -Hn "$want" 2>/dev/null; then
    hard=$(ulimit -Hn)
    N=$(((hard - 2000) / 2))
    echo "note: the hard RLIMIT_NOFILE is $hard and cannot be raised here; N lowered to $N" >&2
    want=$hard
  fi
fi
ulimit -n "$want"
MAXCONN=$((N + 500))

(cd "$root" && cargo build --release --quiet)
bash "$rig/backends.sh" start 1 "$BASE" "$work/be" >/dev/null 2>&1

servers_toml() {
  local a
  if [[ $1 == http ]]; then
    printf '[[upstream.server]]\naddress = "127.0.0.1:%s"\n' "$BASE"
  else
    for a in ${BE_ADDRS//,/ }; do printf '[[upstream.server]]\naddress = "%s:%s"\n' "$a" "$BE_TCP"; done
  fi
}

start_proxy() {  # system mode -> sets proxy_pid
  local system=$1 mode=$2 conf a
  case $system in
    ballast)
      conf=$work/ballast-$mode.toml
      {
        printf '[global]\nlog_level = "error"\nthreads = 1\nmax_connections = %s\n\n' "$MAXCONN"
        printf '[[listener]]\nname = "l"\nbind = "127.0.0.1:%s"\nupstream = "u"\nworkers = 1\n' "$LISTEN"
        [[ $mode == http ]] && printf 'protocol = "http"\n'
        printf '\n[[upstream]]\nname = "u"\n'
        servers_toml "$mode"
      } >"$conf"
      "$root/target/release/ballast" run -c "$conf" 2>"$work/ballast-$mode.err" &
      ;;
    haproxy)
      command -v haproxy >/dev/null || return 1
      conf=$work/haproxy-$mode.cfg
      {
        printf 'global\n    nbthread 1\n    maxconn %s\ndefaults\n    mode %s\n' "$MAXCONN" "$mode"
        printf '    timeout connect 5s\n    timeout client 10m\n    timeout server 10m\n'
        [[ $mode == http ]] && printf '    timeout http-keep-alive 10m\n    option http-keep-alive\n    http-reuse always\n'
        printf 'frontend fe\n    bind 127.0.0.1:%s\n    default_backend be\nbackend be\n    balance roundrobin\n' "$LISTEN"
        if [[ $mode == http ]]; then
          printf '    server s0 127.0.0.1:%s\n' "$BASE"
        else
          local i=0
          for a in ${BE_ADDRS//,/ }; do printf '    server s%s %s:%s\n' "$i" "$a" "$BE_TCP"; i=$((i + 1)); done
        fi
      } >"$conf"
      haproxy -db -f "$conf" >"$work/haproxy-$mode.err" 2>&1 &
      ;;
    nginx)
      command -v nginx >/dev/null || return 1
      conf=$work/nginx-$mode.conf
      mkdir -p "$work/nginx-$mode/tmp"
      {
        [[ $mode == tcp ]] && echo "load_module $(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)/ngx_stream_module.so;"
        printf 'worker_processes 1;\nworker_rlimit_nofile %s;\npid %s/nginx-%s.pid;\n' "$want" "$work" "$mode"
        printf 'error_log %s/nginx-%s.err error;\nevents { worker_connections %s; }\n' "$work" "$mode" "$((2 * MAXCONN))"
        if [[ $mode == http ]]; then
          printf 'http {\n    access_log off;\n    keepalive_timeout 10m;\n    keepalive_requests 1000000;\n'
          printf '    client_body_temp_path %s/nginx-%s/tmp;\n    proxy_temp_path %s/nginx-%s/tmp;\n' "$work" "$mode" "$work" "$mode"
          printf '    upstream be { server 127.0.0.1:%s; keepalive 256; }\n' "$BASE"
          printf '    server { listen 127.0.0.1:%s; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }\n}\n' "$LISTEN"
        else
          printf 'stream {\n    upstream be {\n'
          for a in ${BE_ADDRS//,/ }; do printf "        server %s:%s max_fails=0;\n" "$a" "$BE_TCP"; done
          printf '    }\n    server { listen 127.0.0.1:%s; proxy_pass be; proxy_timeout 10m; }\n}\n' "$LISTEN"
        fi
      } >"$conf"
      nginx -p "$work/nginx-$mode" -e "$work/nginx-$mode.err" -c "$conf" -g 'daemon off;' &
      ;;
  esac
  proxy_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$LISTEN") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$system did not start" >&2
  return 1
}

printf '%-8s %-5s %8s %12s %12s %10s %8s\n' system mode conns rss_before rss_after KiB/conn seconds
for system in $SYSTEMS; do
  for mode in $MODES; do
    start_proxy "$system" "$mode" || { echo "$system: skipped"; continue; }
    if out=$(timeout 400 python3 "$here/idle_conns.py" "$mode" "$N" "$LISTEN" "$proxy_pid" "$BE_TCP" "$BE_ADDRS"); then
      read -r m n before after per secs <<<"$out"
      printf '%-8s %-5s %8s %10s KiB %8s KiB %10s %8s\n' "$system" "$m" "$n" "$before" "$after" "$per" "$secs"
    else
      echo "$system $mode: failed"
    fi
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=
    sleep 1
  done
done
