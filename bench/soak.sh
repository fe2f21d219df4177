#!/usr/bin/env bash
# Soak: a release ballast under mixed load for DURATION seconds while its configuration is
# reloaded and its servers die and come back, watching for failed requests and for memory or
# file descriptors that grow. Not part of the test suite; loopback only; stops by itself.
#
#   ballast      a TCP listener (line echo), an HTTP listener and a UDP listener (echo), each over
#                3 servers of its own with health checks; 2 runtime threads
#   load         wrk (HTTP GET, keep-alive), a TCP client loop (connect, one line, read it back,
#                close) and examples/udp_load (request/response flows), all for DURATION
#   reloads      every RELOAD_EVERY s, SIGHUP with the other of two valid files: B changes every
#                server weight and adds a TCP listener, A takes them back (the listener drains)
#   kills        every KILL_EVERY s, one server of each kind in turn: the HTTP one (an nginx) and
#                the UDP one get SIGKILL, the TCP one SIGTERM (it stops listening and answers the
#                exchanges it has, as a restarted service does); all come back DOWN s later
#   samples      every SAMPLE_EVERY s, ballast's RSS and open descriptors (CSV in the work dir);
#                those of the first WARMUP s (10) are left out of the slopes and the growth
#
# At the end: requests (UDP: udp_load's answered rate times DURATION), failures, reloads, kills,
# and the RSS/fd series with min, max and slope.
# Exits non-zero when an idempotent request failed (an HTTP GET answered other than 2xx or with
# a socket error; a TCP exchange that did not get its line back, unless a server reset it: see
# "server_resets" below), a reload was refused, ballast
# died, or RSS grew more than RSS_GROWTH_PCT % from the mean of the first third of the samples to
# the mean of the last third. UDP datagrams lost to a killed server are reported, not counted as
# failures (UDP promises nothing; a flow moves once checks see its server down).
#
#   bench/soak.sh                        # 10 minutes
#   DURATION=120 bench/soak.sh           # a quick one
#
# Needs: nginx, wrk, python3. Builds ballast and examples/udp_load --release.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
DURATION=${DURATION:-600}
RELOAD_EVERY=${RELOAD_EVERY:-3}
KILL_EVERY=${KILL_EVERY:-10}
DOWN=${DOWN:-3}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
WARMUP=${WARMUP:-10}
RSS_GROWTH_PCT=${RSS_GROWTH_PCT:-20}
HTTP_CONNS=${HTTP_CONNS:-8}
TCP_CONNS=${TCP_CONNS:-4}
UDP_FLOWS=${UDP_FLOWS:-4}
BASEPORT=${BASEPORT:-19500}

for tool in nginx wrk python3; do
  command -v "$tool" >/dev/null || { echo "soak.sh: needs $tool" >&2; exit 2; }
done
# The interpreter itself, not a version manager's shim: its pid is the server's, to signal.
py=$(python3 -c 'import sys; print(sys.executable)')
(cd "$root" && cargo build --release --quiet --bin ballast --example udp_load)
bin=$root/target/release
work=$(mktemp -d /tmp/ballast-soak.XXXXXX)
echo "soak.sh: DURATION=${DURATION}s, work dir $work"

# Ports: ballast's listeners, then 3 servers per kind.
tcp_port=$BASEPORT http_port=$((BASEPORT + 1)) udp_port=$((BASEPORT + 2)) extra_port=$((BASEPORT + 3))
tcp_servers=($((BASEPORT + 10)) $((BASEPORT + 11)) $((BASEPORT + 12)))
http_servers=($((BASEPORT + 20)) $((BASEPORT + 21)) $((BASEPORT + 22)))
udp_servers=($((BASEPORT + 30)) $((BASEPORT + 31)) $((BASEPORT + 32)))

pids=()
ballast_pid=
cleanup() {
  local f p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*.pid; do
    [[ -s $f ]] && kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  [[ -n $ballast_pid ]] && kill "$ballast_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

port_free() { ! "$py" -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; }
wait_port() {
  for _ in $(seq 200); do
    port_free "$1" || return 0
    sleep 0.05
  done
  echo "soak.sh: nothing listens on port $1" >&2
  return 1
}
for p in $tcp_port $http_port $extra_port "${tcp_servers[@]}" "${http_servers[@]}"; do
  port_free "$p" || { echo "soak.sh: port $p is in use (set BASEPORT)" >&2; exit 2; }
done

# === servers: one process each, so one can die alone; its pid in $work/KIND-PORT.pid ===

start_http() { # $1 port: one single-process nginx answering 200 "ok"
  local p=$1 d=$work/nginx-$1
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server { listen 127.0.0.1:$p; location / { return 200 "ok\n"; } }
}
CONF
  nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >/dev/null 2>&1 &
  echo $! >"$work/http-$p.pid"
  disown $! # killed on purpose, and by pid file at the end: no job notices
}
start_tcp() { # $1 port
  "$py" "$here/soak.py" tcp-echo "$1" >>"$work/tcp-$1.log" 2>&1 &
  echo $! >"$work/tcp-$1.pid"
  disown $!
}
start_udp() { # $1 port
  "$bin/examples/udp_load" echo "127.0.0.1:$1" >>"$work/udp-$1.log" 2>&1 &
  echo $! >"$work/udp-$1.pid"
  disown $!
}
stop_server() { # $1 kind, $2 port, $3 signal
  local f=$work/$1-$2.pid
  [[ -s $f ]] || return 0
  kill "-$3" "$(cat "$f")" 2>/dev/null || true
  # Reap it before starting another on the same port (SIGTERM: up to 1 s of answering).
  for _ in $(seq 40); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.05; done
  rm -f "$f"
}

for p in "${http_servers[@]}"; do start_http "$p"; done
for p in "${tcp_servers[@]}"; do start_tcp "$p"; done
for p in "${udp_servers[@]}"; do start_udp "$p"; done
for p in "${http_servers[@]}" "${tcp_servers[@]}"; do wait_port "$p"; done

# === ballast: two valid files, A and B ===

conf() { # $1 = a or b
  local w1=1 w2=2 w3=3 extra=""
  if [[ $1 == b ]]; then
    w1=3 w2=2 w3=1
    extra="[[listener]]
name = \"extra\"
bind = \"127.0.0.1:$extra_port\"
upstream = \"tcp\"
workers = 1"
  fi
  servers() { # $1 ports...
    local i=0 p w
    for p in "$@"; do
      i=$((i + 1))
      w=$((i == 1 ? w1 : i == 2 ? w2 : w3))
      printf '[[upstream.server]]\naddress = "127.0.0.1:%s"\nweight = %s\n' "$p" "$w"
    done
  }
  cat <<CONF
[global]
log_level = "info"
threads = 2
shutdown_grace = "2s"

[[listener]]
name = "tcp"
bind = "127.0.0.1:$tcp_port"
upstream = "tcp"
workers = 1

[[listener]]
name = "http"
bind = "127.0.0.1:$http_port"
protocol = "http"
upstream = "http"
workers = 1

[[listener]]
name = "udp"
bind = "127.0.0.1:$udp_port"
protocol = "udp"
upstream = "udp"

$extra

[[upstream]]
name = "tcp"
scheduler = "wrr"
connect_timeout = "1s"
retries = 2
[upstream.health_check]
type = "tcp"
interval = "1s"
fast_interval = "250ms"
rise = 2
fall = 2
$(servers "${tcp_servers[@]}")

[[upstream]]
name = "http"
scheduler = "wrr"
connect_timeout = "1s"
retries = 2
[upstream.health_check]
type = "http"
path = "/"
interval = "1s"
fast_interval = "250ms"
rise = 2
fall = 2
$(servers "${http_servers[@]}")

[[upstream]]
name = "udp"
scheduler = "wrr"
[upstream.health_check]
type = "udp"
send = "soak-check"
interval = "1s"
fast_interval = "250ms"
rise = 2
fall = 2
$(servers "${udp_servers[@]}")
CONF
}
conf a >"$work/a.toml"
conf b >"$work/b.toml"
"$bin/ballast" check -c "$work/a.toml" >/dev/null
"$bin/ballast" check -c "$work/b.toml" >/dev/null
cp "$work/a.toml" "$work/ballast.toml"
"$bin/ballast" run -c "$work/ballast.toml" 2>"$work/ballast.log" &
ballast_pid=$!
wait_port "$tcp_port"
wait_port "$http_port"

# === the run ===

start=$(date +%s)
end=$((start + DURATION))
alive() { kill -0 "$ballast_pid" 2>/dev/null; }

reloads() {
  local n=0 which
  while sleep "$RELOAD_EVERY" && (($(date +%s) < end)) && alive; do
    n=$((n + 1))
    which=$((n % 2 == 1 ? 1 : 0))
    if ((which)); then cp "$work/b.toml" "$work/ballast.toml"; else cp "$work/a.toml" "$work/ballast.toml"; fi
    kill -HUP "$ballast_pid"
    echo "$n" >"$work/reloads.sent"
  done
}
kills() {
  local n=0 i
  while sleep "$KILL_EVERY" && (($(date +%s) + DOWN < end)) && alive; do
    i=$((n % 3))
    stop_server http "${http_servers[$i]}" KILL
    stop_server tcp "${tcp_servers[$i]}" TERM
    stop_server udp "${udp_servers[$i]}" KILL
    n=$((n + 1))
    echo "$((3 * n))" >"$work/kills.done"
    sleep "$DOWN"
    start_http "${http_servers[$i]}"
    start_tcp "${tcp_servers[$i]}"
    start_udp "${udp_servers[$i]}"
  done
}
samples() {
  echo "t,rss_kb,fds" >"$work/samples.csv"
  local now rss fds
  while alive && (($(date +%s) <= end)); do
    now=$(($(date +%s) - start))
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$ballast_pid/status" 2>/dev/null || echo 0)
    fds=$(find "/proc/$ballast_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l || true)
    echo "$now,$rss,$fds" >>"$work/samples.csv"
    sleep "$SAMPLE_EVERY"
  done
}

reloads &
pids+=($!)
kills &
pids+=($!)
samples &
pids+=($!)
bound=$((DURATION + 30))
timeout "$bound" wrk -t1 -c"$HTTP_CONNS" -d"${DURATION}s" --timeout 5s "http://127.0.0.1:$http_port/" \
  >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
timeout "$bound" "$py" "$here/soak.py" tcp-load "127.0.0.1:$tcp_port" "$TCP_CONNS" "$DURATION" \
  >"$work/tcp.json" 2>&1 &
tcp_pid=$!
timeout "$bound" "$bin/examples/udp_load" load "127.0.0.1:$udp_port" "$UDP_FLOWS" "$DURATION" \
  >"$work/udp.txt" 2>&1 &
udp_pid=$!
wait "$wrk_pid" "$tcp_pid" "$udp_pid" || true
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

# === the figures ===

survived=yes
alive || survived=no
# Ballast's own count of relays that failed on the server side (the Errors column of the TCP
# listener's servers in the kill -USR1 table): a server whose listening socket closes while
# connections wait in its accept queue resets them after ballast's connect succeeded and the
# client's line went out. No L4 proxy can retry those (the bytes were sent); they are the
# server's, reported apart, and excused only up to the number ballast attributes to servers.
server_resets=0
if [[ $survived == yes ]]; then
  kill -USR1 "$ballast_pid" 2>/dev/null || true
  sleep 1
  server_resets=$(awk -v l="TCP 127.0.0.1:$tcp_port " '
    index($0, "counters") {n = 0; inside = 0}
    index($0, l) == 1 {inside = 1; next}
    inside && $1 == "->" {n += $7; next}
    {inside = 0}
    END {print n + 0}' "$work/ballast.log")
fi
http_requests=$(awk '/ requests in / {print $1; exit}' "$work/wrk.txt")
http_requests=${http_requests:-0}
http_non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/ {print $2; exit}' "$work/wrk.txt")
http_non2xx=${http_non2xx:-0}
# "Socket errors: connect 0, read 0, write 0, timeout 0"
http_sock=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10; exit}' "$work/wrk.txt")
http_sock=${http_sock:-0}
tcp_ok=$("$py" -c "import json; print(json.load(open('$work/tcp.json'))['ok'])" 2>/dev/null || echo 0)
tcp_failed=$("$py" -c "import json; print(json.load(open('$work/tcp.json'))['failed'])" 2>/dev/null || echo -1)
udp_rate=$(grep -oE 'dgrams/s=[0-9.]+' "$work/udp.txt" | cut -d= -f2 || true)
udp_answered=$(awk -v r="${udp_rate:-0}" -v d="$DURATION" 'BEGIN {printf "%d", r * d}')
udp_lost=$(grep -oE 'lost=[0-9]+' "$work/udp.txt" | cut -d= -f2 || true)
reloads_sent=$(cat "$work/reloads.sent" 2>/dev/null || echo 0)
reloads_done=$(grep -c 'configuration reloaded' "$work/ballast.log" || true)
reloads_refused=$(grep -c 'reload refused' "$work/ballast.log" || true)
kills_done=$(cat "$work/kills.done" 2>/dev/null || echo 0)
tcp_reset=$("$py" -c "import json; print(json.load(open('$work/tcp.json'))['reset'])" 2>/dev/null || echo 0)
excused=$((tcp_reset < server_resets ? tcp_reset : server_resets))
failures=$((http_non2xx + http_sock + (tcp_failed < 0 ? 1 : tcp_failed - excused)))
sum=$("$py" "$here/soak.py" summary "$work/samples.csv" "$WARMUP")
growth=$("$py" -c "import json,sys; print(json.loads(sys.argv[1])['rss_growth_pct'])" "$sum")

echo
echo "== soak: ${DURATION}s, reload every ${RELOAD_EVERY}s, kill every ${KILL_EVERY}s"
printf '%-30s %s\n' \
  "requests (http/tcp/udp~)" "$((http_requests + tcp_ok + udp_answered)) ($http_requests/$tcp_ok/$udp_answered)" \
  "failures (idempotent)" "$failures (http non-2xx $http_non2xx, http socket errors $http_sock, tcp $((tcp_failed - excused)))" \
  "tcp resets by servers" "$excused (ballast counted $server_resets relays failed by a server)" \
  "udp lost" "${udp_lost:-?}" \
  "reloads sent/done/refused" "$reloads_sent/$reloads_done/$reloads_refused" \
  "servers killed" "$kills_done" \
  "ballast alive at the end" "$survived"
echo
echo "samples ($work/samples.csv):"
column -s, -t <"$work/samples.csv" | sed 's/^/  /'
"$py" -c "
import json, sys
s = json.loads(sys.argv[1])
for k in ('rss_kb', 'fds'):
    v = s[k]
    print(f\"{k:8} min {v['min']:>8.0f}  max {v['max']:>8.0f}  first {v['first']:>8.0f}  last {v['last']:>8.0f}  slope {v['slope_per_min']:>8}/min\")
print(f\"slopes and growth over the {s['steady_samples']} samples after the first ${WARMUP}s\")
print(f\"rss growth, first third to last third: {s['rss_growth_pct']} % (limit $RSS_GROWTH_PCT %)\")
" "$sum"
echo "tcp: $(cat "$work/tcp.json")"
echo "udp: $(cat "$work/udp.txt")"

status=0
((failures == 0)) || { echo "soak.sh: FAIL: $failures idempotent requests failed" >&2; status=1; }
((reloads_refused == 0)) || { echo "soak.sh: FAIL: $reloads_refused reloads refused (see $work/ballast.log)" >&2; status=1; }
[[ $survived == yes ]] || { echo "soak.sh: FAIL: ballast died (see $work/ballast.log)" >&2; status=1; }
if awk -v g="$growth" -v l="$RSS_GROWTH_PCT" 'BEGIN {exit !(g > l)}'; then
  echo "soak.sh: FAIL: RSS grew $growth % (limit $RSS_GROWTH_PCT %)" >&2
  status=1
fi
((status == 0)) && echo "soak.sh: PASS"
exit "$status"
