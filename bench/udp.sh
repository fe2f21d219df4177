#!/usr/bin/env bash
# UDP benchmark: datagrams per second and round-trip percentiles on 127.0.0.1, in one run, for
#   direct         the load generator straight to a UDP echo server (the ceiling of this box)
#   ballast        a udp listener, round robin over two echo servers, one flow per client
#   ballast-r1     the same with responses = 1: every request is a new flow (DNS style)
#   nginx          nginx stream `listen … udp`, proxy_timeout 10m: one session per client
#   nginx-r1       the same with proxy_responses 1: every request is a new session
#   alt, alt-r1    as ballast and ballast-r1, run with the binary $BALLAST_ALT (another build, to
#                  compare two versions in one run: SYSTEMS="ballast alt" BALLAST_ALT=/tmp/old)
# FLOWS clients (one socket each) run request/response in lockstep for DURATION seconds,
# REPS times per system, interleaved (ABC CBA). Pinned like the shared rig: the proxy on CPU 0
# (PROXY_CPUS), load generator and echo servers on CPU 1 (LOAD_CPUS). One proxy thread/worker.
# Also reports the proxy's CPU seconds per 100k requests (utime+stime from /proc/PID/stat).
#
#   bench/udp.sh                       # about 1 minute with the defaults
#   FLOWS=16 DURATION=10 REPS=3 bench/udp.sh
#
# Needs: nginx and libnginx-mod-stream (apt). Builds ballast and examples/udp_load --release.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
FLOWS=${FLOWS:-64}
DURATION=${DURATION:-5}
REPS=${REPS:-2}
SIZE=${SIZE:-64}
PROXY_CPUS=${PROXY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
BASEPORT=${BASEPORT:-19100}
PROXY_PORT=${PROXY_PORT:-19000}
SYSTEMS=${SYSTEMS:-direct ballast ballast-r1 nginx nginx-r1}

(cd "$root" && cargo build --release --quiet --bin ballast --example udp_load)
bin=$root/target/release
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

be1=127.0.0.1:$((BASEPORT + 1))
be2=127.0.0.1:$((BASEPORT + 2))
taskset -c "$LOAD_CPUS" "$bin/examples/udp_load" echo "$be1" "$be2" &
pids+=($!)
echo_pid=$!

ticks() {  # utime+stime of a process tree (nginx: master and worker), in clock ticks
  local t=0 p s f
  for p in "$1" $(pgrep -P "$1" || true); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -ra f <<<"${s##*) }"
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}

ballast_conf() {  # $1: extra listener lines
  cat <<CONF
[global]
log_level = "warn"
threads = 1

[[listener]]
name = "bench"
bind = "127.0.0.1:$PROXY_PORT"
protocol = "udp"
upstream = "bench"
workers = 1
$1

[[upstream]]
name = "bench"
scheduler = "rr"
server = [{ address = "$be1" }, { address = "$be2" }]
CONF
}

nginx_conf() {  # $1: extra server lines
  local modules
  modules=$(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)
  cat <<CONF
load_module $modules/ngx_stream_module.so;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 16384; }
stream {
    upstream be {
        server $be1;
        server $be2;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT udp;
        proxy_pass be;
        proxy_timeout 10m;
        $1
    }
}
CONF
}

start_proxy() {  # $1 system; sets proxy_pid (empty for direct)
  proxy_pid=
  case $1 in
    direct) return ;;
    ballast) ballast_conf "" >"$tmp/b.toml" ;;
    ballast-r1 | alt-r1) ballast_conf "responses = 1" >"$tmp/b.toml" ;;
    alt) ballast_conf "" >"$tmp/b.toml" ;;
    nginx) nginx_conf "" >"$tmp/n.conf" ;;
    nginx-r1) nginx_conf "proxy_responses 1;" >"$tmp/n.conf" ;;
  esac
  case $1 in
    ballast*) taskset -c "$PROXY_CPUS" "$bin/ballast" run -c "$tmp/b.toml" 2>>"$tmp/ballast.err" & ;;
    alt*) taskset -c "$PROXY_CPUS" "${BALLAST_ALT:?set BALLAST_ALT}" run -c "$tmp/b.toml" 2>>"$tmp/ballast.err" & ;;
    nginx*) taskset -c "$PROXY_CPUS" nginx -p "$tmp" -e "$tmp/nginx.err" -c "$tmp/n.conf" -g 'daemon off;' & ;;
  esac
  proxy_pid=$!
  pids+=("$proxy_pid")
  sleep 0.5
}

stop_proxy() {
  [[ -n $proxy_pid ]] || return 0
  kill -TERM "$proxy_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
}

measure() {  # $1 system: one row of raw figures
  local target=127.0.0.1:$PROXY_PORT t0 t1 out
  [[ $1 == direct ]] && target=$be1
  start_proxy "$1"
  # Warm-up, unmeasured.
  taskset -c "$LOAD_CPUS" timeout 30 "$bin/examples/udp_load" load "$target" "$FLOWS" 1 "$SIZE" >/dev/null
  t0=0; [[ -n $proxy_pid ]] && t0=$(ticks "$proxy_pid")
  out=$(taskset -c "$LOAD_CPUS" timeout $((DURATION + 30)) "$bin/examples/udp_load" load "$target" "$FLOWS" "$DURATION" "$SIZE")
  t1=0; [[ -n $proxy_pid ]] && t1=$(ticks "$proxy_pid")
  stop_proxy
  echo "$1 $out cpu_ticks=$((t1 - t0))"
}

hz=$(getconf CLK_TCK)
echo "# udp bench: FLOWS=$FLOWS DURATION=${DURATION}s REPS=$REPS SIZE=${SIZE}B proxy CPU $PROXY_CPUS, load+echo CPU $LOAD_CPUS; $(nproc) CPUs, $(uname -r)"
read -ra systems <<<"$SYSTEMS"
for ((r = 1; r <= REPS; r++)); do
  order=("${systems[@]}")
  if ((r % 2 == 0)); then
    order=()
    for ((i = ${#systems[@]} - 1; i >= 0; i--)); do order+=("${systems[$i]}"); done
  fi
  for s in "${order[@]}"; do measure "$s" | tee -a "$tmp/raw"; done
done

echo
python3 - "$tmp/raw" "$hz" "$DURATION" "$SYSTEMS" <<'PY'
import statistics, sys
raw, hz, duration, systems = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
rows = {}
for line in open(raw):
    name, *kv = line.split()
    rows.setdefault(name, []).append({k: float(v) for k, v in (x.split("=") for x in kv)})
print("| system | dgrams/s (median) | min–max | p50 µs | p99 µs | lost | proxy CPU s per 100k dgrams |")
print("|---|---|---|---|---|---|---|")
for s in systems:
    r = rows.get(s, [])
    if not r:
        continue
    rates = [x["dgrams/s"] for x in r]
    total = sum(rates) * duration
    cpu = sum(x["cpu_ticks"] for x in r) / hz
    per = f"{cpu / total * 100000:.2f}" if s != "direct" and total else "—"
    print(f"| {s} | {statistics.median(rates):.0f} | {min(rates):.0f}–{max(rates):.0f} | "
          f"{statistics.median(x['p50_us'] for x in r):.0f} | {statistics.median(x['p99_us'] for x in r):.0f} | "
          f"{sum(x['lost'] for x in r):.0f} | {per} |")
PY
