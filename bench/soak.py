#!/usr/bin/env python3
"""Pieces of bench/soak.sh: a TCP echo server, a TCP client loop, and the summary of samples.

  soak.py tcp-echo PORT
      Echo lines on 127.0.0.1:PORT. On SIGTERM it stops listening, answers the connections it
      has for up to 1 s more, then exits (a server being restarted, not one crashing).
  soak.py tcp-load ADDR:PORT CONCURRENCY SECONDS
      CONCURRENCY loops, each: connect, send one line, read it back, close; for SECONDS. Every
      exchange that does not get its own line back is a failure, counted by kind. Prints one
      JSON object.
  soak.py summary SAMPLES.CSV [WARMUP]
      From the t,rss_kb,fds samples: min, max, slope per minute of each, and the RSS growth from
      the mean of the first third to the mean of the last third, in percent. Samples taken in
      the first WARMUP seconds (default 10: buffers, pools and connections being set up) count
      for min and max but not for the slope and the growth. Prints JSON.
"""

import asyncio
import csv
import json
import signal
import sys
import time


async def tcp_echo(port):
    conns = set()

    async def serve(reader, writer):
        conns.add(writer)
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            conns.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    deadline = time.monotonic() + 1.0
    while conns and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def tcp_load(addr, concurrency, seconds):
    host, port = addr.rsplit(":", 1)
    port = int(port)
    end = time.monotonic() + seconds
    counts = {"ok": 0, "refused": 0, "reset": 0, "closed": 0, "wrong": 0, "timeout": 0}

    async def one(n):
        i = 0
        while time.monotonic() < end:
            i += 1
            line = f"soak {n} {i}\n".encode()
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), 5)
                writer.write(line)
                await writer.drain()
                got = await asyncio.wait_for(reader.readline(), 5)
                if got == line:
                    counts["ok"] += 1
                elif got == b"":
                    counts["closed"] += 1
                else:
                    counts["wrong"] += 1
            except ConnectionRefusedError:
                counts["refused"] += 1
            except (ConnectionResetError, BrokenPipeError):
                counts["reset"] += 1
            except asyncio.TimeoutError:
                counts["timeout"] += 1
            except OSError:
                counts["reset"] += 1
            finally:
                if writer is not None:
                    writer.close()

    await asyncio.gather(*(one(n) for n in range(concurrency)))
    counts["failed"] = sum(v for k, v in counts.items() if k != "ok")
    print(json.dumps(counts))


def slope(xs, ys):
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def summary(path, warmup):
    with open(path) as f:
        rows = [r for r in csv.DictReader(f)]
    steady = [r for r in rows if float(r["t"]) >= warmup] or rows
    t = [float(r["t"]) for r in steady]
    out = {"samples": len(rows), "steady_samples": len(steady)}
    for key in ("rss_kb", "fds"):
        v = [float(r[key]) for r in rows]
        s = [float(r[key]) for r in steady]
        out[key] = {
            "min": min(v, default=0),
            "max": max(v, default=0),
            "first": v[0] if v else 0,
            "last": v[-1] if v else 0,
            "slope_per_min": round(slope(t, s) * 60, 2),
        }
    rss = [float(r["rss_kb"]) for r in steady]
    third = max(len(rss) // 3, 1)
    first, last = rss[:third], rss[-third:]
    if first and last:
        a, b = sum(first) / len(first), sum(last) / len(last)
        out["rss_growth_pct"] = round((b - a) / a * 100, 2) if a else 0.0
    else:
        out["rss_growth_pct"] = 0.0
    print(json.dumps(out))


def main():
    args = sys.argv[1:]
    if args[:1] == ["tcp-echo"] and len(args) == 2:
        asyncio.run(tcp_echo(int(args[1])))
    elif args[:1] == ["tcp-load"] and len(args) == 4:
        asyncio.run(tcp_load(args[1], int(args[2]), float(args[3])))
    elif args[:1] == ["summary"] and len(args) in (2, 3):
        summary(args[1], float(args[2]) if len(args) == 3 else 10.0)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(64)


if __name__ == "__main__":
    main()
