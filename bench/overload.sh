#!/usr/bin/env bash
# Overload: a connection flood against a listener with a small backlog in front of a slow backend,
# to see where the excess goes. Three candidates, one after the other, same flood:
#   ballast-limit    listener max_connections = MAXCONN: ballast stops accepting at the limit,
#                    excess connections wait in the kernel's accept queue (BACKLOG long); beyond
#                    that the kernel drops handshakes (ListenOverflows) and clients retry their SYN
#   ballast-nolimit  no listener limit (the global one, derived from RLIMIT_NOFILE, is far above
#                    CLIENTS): ballast accepts everything and the backend gets all of it at once
#   ballast-limit-backlog  the same limit with a backlog of CLIENTS: the queue holds the flood
#   haproxy          frontend maxconn MAXCONN, bind … backlog BACKLOG: HAProxy's own behaviour
# and, with FD_STARVED=1, two more under `ulimit -n 256`, where accepting everything runs out of
# file descriptors:
#   ballast-fd-nolimit   max_connections = 100000 (above what 256 descriptors hold): accept, then
#                        fail the server connect with EMFILE and reset the client
#   ballast-fd-derived   max_connections derived from the limit (about 95): stop accepting instead
#
# For each: clients served, failures by kind, latency, and the host's ListenOverflows/ListenDrops
# deltas over the flood (host-wide counters: run nothing else meanwhile). Loopback only; every
# step is bounded (each flood by TIMEOUT seconds).
#
#   bench/overload.sh                    # about a minute with the defaults below
#   CLIENTS=2000 DELAY=0.1 FD_STARVED=1 bench/overload.sh
#
# Needs: python3, and haproxy for the HAProxy row (skipped when absent). Builds ballast --release.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
CLIENTS=${CLIENTS:-1000}   # concurrent clients, all started at once
BACKLOG=${BACKLOG:-16}     # listen backlog of the balancer's socket
MAXCONN=${MAXCONN:-50}     # connection limit of the balancer
DELAY=${DELAY:-0.2}        # seconds the backend takes per connection
TIMEOUT=${TIMEOUT:-20}     # seconds each flood may take, connects and answers included
THREADS=${THREADS:-2}      # balancer threads
FD_STARVED=${FD_STARVED:-0}

(cd "$root" && cargo build --release --quiet)
ballast=$root/target/release/ballast
work=$(mktemp -d /tmp/ballast-overload.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}

bport=$(free_port)
python3 "$here/overload.py" backend "$bport" "$DELAY" >"$work/backend.log" 2>&1 &
pids+=($!)
wait_port "$bport"

ballast_conf() { # $1 port, $2 extra listener lines, $3 extra global lines
  cat <<CONF
[global]
log_level = "warn,ballast::cli=info"
threads = $THREADS
shutdown_grace = "1s"
$3

[[listener]]
name = "flood"
bind = "127.0.0.1:$1"
upstream = "slow"
workers = 1
backlog = ${4:-$BACKLOG}
$2

[[upstream]]
name = "slow"
connect_timeout = "5s"

[[upstream.server]]
address = "127.0.0.1:$bport"
CONF
}

haproxy_conf() { # $1 port
  cat <<CONF
global
  maxconn 5000
  nbthread $THREADS
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend flood
  bind 127.0.0.1:$1 backlog $BACKLOG
  maxconn $MAXCONN
  default_backend slow
backend slow
  server s1 127.0.0.1:$bport
CONF
}

results=()
run() { # $1 name, $2… command (with {port}); the flood runs once it listens
  local name=$1; shift
  local port; port=$(free_port)
  local cmd=("${@//\{port\}/$port}")
  local conf="$work/$name.conf"
  case $name in
    ballast-limit) ballast_conf "$port" "max_connections = $MAXCONN" "" >"$conf" ;;
    ballast-limit-backlog) ballast_conf "$port" "max_connections = $MAXCONN" "" "$CLIENTS" >"$conf" ;;
    ballast-nolimit) ballast_conf "$port" "" "" >"$conf" ;;
    ballast-fd-nolimit) ballast_conf "$port" "" "max_connections = 100000" >"$conf" ;;
    ballast-fd-derived) ballast_conf "$port" "" "" >"$conf" ;;
    haproxy) haproxy_conf "$port" >"$conf" ;;
  esac
  cmd=("${cmd[@]//\{conf\}/$conf}")
  "${cmd[@]}" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  sleep 0.3
  local out
  out=$(ulimit -n 65536 2>/dev/null; python3 "$here/overload.py" flood "127.0.0.1:$port" "$CLIENTS" "$TIMEOUT")
  if [[ $name == ballast-* ]]; then
    # The counters table while the listening sockets are still open (it then includes the
    # kernel's drops at the listener's accept queue).
    kill -USR1 "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  results+=("$name $out")
  echo "$name: $out"
  if [[ $name == ballast-* ]]; then
    # ballast's own view at exit: the limits line of its counters table.
    grep -E '^Connections: open' "$work/$name.log" | head -1 | sed 's/^ */    ballast: /' || true
    grep -E '^\s+flood +open.*dropped by the kernel' "$work/$name.log" | tail -1 | sed 's/^ */    ballast: /' || true
    grep -c 'no server available' "$work/$name.log" | sed 's/^/    no-server log lines: /' || true
  fi
}

run ballast-limit "$ballast" run -c "{conf}"
run ballast-nolimit "$ballast" run -c "{conf}"
run ballast-limit-backlog "$ballast" run -c "{conf}"
if command -v haproxy >/dev/null; then
  run haproxy haproxy -db -f "{conf}"
else
  echo "haproxy: not installed, skipped"
fi
if [[ $FD_STARVED == 1 ]]; then
  run ballast-fd-nolimit sh -c "ulimit -n 256 && exec \"\$0\" run -c \"\$1\"" "$ballast" "{conf}"
  run ballast-fd-derived sh -c "ulimit -n 256 && exec \"\$0\" run -c \"\$1\"" "$ballast" "{conf}"
fi

echo
echo "CLIENTS=$CLIENTS BACKLOG=$BACKLOG MAXCONN=$MAXCONN DELAY=${DELAY}s TIMEOUT=${TIMEOUT}s THREADS=$THREADS ($(nproc) cores)"
printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
print("| candidate | ok | failed | p50 s | p99 s | wall s | ListenOverflows | ListenDrops |")
print("|---|---|---|---|---|---|---|---|")
for line in sys.stdin:
    name, js = line.split(" ", 1)
    r = json.loads(js)
    failed = ", ".join("%s %d" % kv for kv in sorted(r["failed"].items())) or "0"
    lat = r["latency_s"]
    row = [name, r["ok"], failed, lat["p50"], lat["p99"], r["wall_s"], r["ListenOverflows"], r["ListenDrops"]]
    print("| " + " | ".join(str(c) for c in row) + " |")
'
echo "logs: $work"
