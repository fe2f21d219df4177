#!/usr/bin/env bash
# CPU cost of health checks: ballast checking N servers (default 1,000) every INTERVAL (default 1s)
# for DURATION seconds (default 30), on 127.0.0.1. A Python helper opens N listening sockets and
# accepts (and, for CHECK=http, answers) every check; ballast's user + system CPU time is read from
# /proc/PID/stat before and after the measured window, after a warm-up of two intervals.
#
#   bench/health-cost.sh                     # 1,000 servers, tcp checks, 1 s, 30 s
#   CHECK=http N=1000 DURATION=30 bench/health-cost.sh
#
# Needs python3. Builds ballast --release. Everything stays on 127.0.0.1 and ends by itself.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
N=${N:-1000}
INTERVAL=${INTERVAL:-1s}
DURATION=${DURATION:-30}
CHECK=${CHECK:-tcp}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(cd "$root" && cargo build --release --quiet)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/servers.py" <<'PY'
import selectors, socket, sys, time
n, mode, portfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sel = selectors.DefaultSelector()
ports = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0)); s.listen(128); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, "listen")
    ports.append(s.getsockname()[1])
with open(portfile, "w") as f:
    f.write("\n".join(map(str, ports)))
reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
accepted, last = 0, time.monotonic()
while True:
    if time.monotonic() - last >= 0.2:
        last = time.monotonic()
        with open(portfile + ".accepted", "w") as f:
            f.write(str(accepted))
    for key, _ in sel.select(timeout=0.2):
        if key.data == "listen":
            try:
                c, _ = key.fileobj.accept()
            except OSError:
                continue
            accepted += 1
            if mode == "http":
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "conn")
            else:
                c.close()
        else:
            c = key.fileobj
            try:
                if c.recv(4096):
                    c.send(reply)
            except OSError:
                pass
            sel.unregister(c)
            c.close()
PY
python3 "$work/servers.py" "$N" "$CHECK" "$work/ports" &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/ports ]] && break; sleep 0.1; done
[[ -s $work/ports ]] || { echo "the helper did not start" >&2; exit 1; }

{
  printf '[global]\nlog_level = "warn"\nthreads = 1\n\n'
  printf '[[listener]]\nname = "l"\nbind = "127.0.0.1:0"\nupstream = "u"\nworkers = 1\n\n'
  printf '[[upstream]]\nname = "u"\n'
  printf '[upstream.health_check]\ntype = "%s"\ninterval = "%s"\ntimeout = "%s"\n' "$CHECK" "$INTERVAL" "$INTERVAL"
  while read -r port; do printf '[[upstream.server]]\naddress = "127.0.0.1:%s"\n' "$port"; done < "$work/ports"
} > "$work/ballast.toml"

"$root/target/release/ballast" run -c "$work/ballast.toml" 2> "$work/ballast.log" &
bpid=$!
pids+=($bpid)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
secs=$(python3 -c "import re,sys; t='$INTERVAL'; m=re.match(r'(\d+)(ms|s)$', t); print(int(m.group(1))/(1000 if m.group(2)=='ms' else 1))")
sleep "$(python3 -c "print(2 * $secs + 1)")"
kill -0 "$bpid" || { cat "$work/ballast.log" >&2; exit 1; }
tck=$(getconf CLK_TCK)
b0=$(cpu "$bpid"); h0=$(cpu "${pids[0]}"); a0=$(cat "$work/ports.accepted")
sleep "$DURATION"
b1=$(cpu "$bpid"); h1=$(cpu "${pids[0]}"); a1=$(cat "$work/ports.accepted")
downs=$(grep -c '"down"\|to=down\|to="down"' "$work/ballast.log" || true)
python3 - "$b0" "$b1" "$h0" "$h1" "$tck" "$a0" "$a1" <<PY
import sys
b0, b1, h0, h1, tck, a0, a1 = map(float, sys.argv[1:])
d = float("$DURATION")
checks = a1 - a0
print(f"ballast: {$N} servers, {'$CHECK'} checks every {'$INTERVAL'}, {d:.0f} s measured")
print(f"  checks the servers saw: {checks:.0f} (expected {$N * d / $secs:.0f})")
print(f"  ballast CPU: {(b1-b0)/tck:.2f} s ({100*(b1-b0)/tck/d:.1f} % of one core), "
      f"{1e6*(b1-b0)/tck/checks:.1f} µs per check ({checks:.0f} checks)")
print(f"  helper CPU (the {$N} servers, for reference): {(h1-h0)/tck:.2f} s")
PY
echo "  servers marked down during the run: $downs (should be 0)"
