#!/usr/bin/env python3
"""Pieces of bench/overload.sh: a slow backend, and a connection flood that reports what happened.

  overload.py backend PORT DELAY     serve on 127.0.0.1:PORT: read a line, wait DELAY s, answer, close
  overload.py flood ADDR:PORT N TIMEOUT
      N clients connect at once; each sends a line and waits for the answer, within TIMEOUT s in
      all. Prints one JSON object: ok, failed by kind (connect timeout, refused, reset, closed
      without an answer, read timeout), latency percentiles of the successful ones (connect to
      answer), wall time, and the ListenOverflows / ListenDrops deltas of /proc/net/netstat
      over the flood (host-wide: run nothing else meanwhile).
"""

import asyncio
import json
import sys
import time


def netstat():
    """TcpExt counters of /proc/net/netstat as a dict."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    out = {}
    for names, values in zip(lines[0::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            out.update(zip(names.split()[1:], map(int, values.split()[1:])))
    return out


async def backend(port, delay):
    async def handle(reader, writer):
        try:
            await reader.readline()
            await asyncio.sleep(delay)
            writer.write(b"ok\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


async def one(host, port, deadline):
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), max(0.01, deadline - time.monotonic())
        )
    except asyncio.TimeoutError:
        return "connect_timeout", None
    except ConnectionRefusedError:
        return "refused", None
    except OSError:
        return "connect_error", None
    try:
        writer.write(b"hello\n")
        await writer.drain()
        line = await asyncio.wait_for(
            reader.readline(), max(0.01, deadline - time.monotonic())
        )
        if line == b"ok\n":
            return "ok", time.monotonic() - start
        return "closed_without_answer", None
    except asyncio.TimeoutError:
        return "read_timeout", None
    except ConnectionResetError:
        return "reset", None
    except OSError:
        return "read_error", None
    finally:
        writer.close()


async def flood(addr, n, timeout):
    host, port = addr.rsplit(":", 1)
    before = netstat()
    t0 = time.monotonic()
    deadline = t0 + timeout
    results = await asyncio.gather(*(one(host, int(port), deadline) for _ in range(n)))
    wall = time.monotonic() - t0
    after = netstat()
    kinds = {}
    for kind, _ in results:
        kinds[kind] = kinds.get(kind, 0) + 1
    lat = sorted(l for k, l in results if k == "ok")

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

    print(
        json.dumps(
            {
                "clients": n,
                "ok": kinds.pop("ok", 0),
                "failed": kinds,
                "latency_s": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
                "wall_s": round(wall, 2),
                "ListenOverflows": after.get("ListenOverflows", 0) - before.get("ListenOverflows", 0),
                "ListenDrops": after.get("ListenDrops", 0) - before.get("ListenDrops", 0),
                "TCPReqQFullDrop": after.get("TCPReqQFullDrop", 0) - before.get("TCPReqQFullDrop", 0),
            }
        ),
        flush=True,
    )


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "backend":
        asyncio.run(backend(int(sys.argv[2]), float(sys.argv[3])))
    elif len(sys.argv) == 5 and sys.argv[1] == "flood":
        asyncio.run(flood(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
