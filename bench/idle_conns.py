#!/usr/bin/env python3
"""Opens N idle client connections through a proxy and prints the proxy's memory per connection.

    idle_conns.py MODE N PROXY_PORT PROXY_PID BACKEND_PORT BACKEND_ADDRS

MODE tcp: the proxy relays to BACKEND_PORT on each of BACKEND_ADDRS (comma list of 127.0.0.x),
where this script runs a backend that accepts and holds every connection, silent. A connection
counts once the backend has accepted its server side.
MODE http: each client sends one GET / and reads the answer, then stays open (keep-alive); the
backend (not ours) answers.

Clients connect from 127.0.0.1 .. 127.0.0.8 (IP_BIND_ADDRESS_NO_PORT, so the kernel picks the
port per destination) to avoid running out of source ports. The resident memory (VmRSS) of the
proxy's whole process tree is read before and after; the output line is

    MODE N rss_before_kib rss_after_kib kib_per_connection seconds

Everything is bounded: the whole run gives up after DEADLINE seconds (env, default 300).
"""

import os
import socket
import sys
import threading
import time

IP_BIND_ADDRESS_NO_PORT = 24


def tree_rss_kib(pid):
    """VmRSS of pid and its children (nginx: master and workers)."""
    pids = {pid}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            pids.add(int(p))
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def main():
    mode, n, port, pid, be_port, be_addrs = sys.argv[1:7]
    n, port, pid, be_port = int(n), int(port), int(pid), int(be_port)
    deadline = time.monotonic() + float(os.environ.get("DEADLINE", "300"))
    held, accepted = [], [0]
    if mode == "tcp":
        for addr in be_addrs.split(","):
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((addr, be_port))
            ls.listen(65535)

            def serve(ls=ls):
                while True:
                    s, _ = ls.accept()
                    held.append(s)
                    accepted[0] += 1

            threading.Thread(target=serve, daemon=True).start()

    def open_one(i):
        s = socket.socket()
        s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((f"127.0.0.{1 + i % 8}", 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        if mode == "http":
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("closed before an answer")
                got += chunk
            head, body = got.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(body) < length:
                body += s.recv(4096)
        return s

    # Warm-up: a few hundred connections, closed, so the proxy's first growth is not counted.
    for s in [open_one(i) for i in range(200)]:
        s.close()
    time.sleep(1)
    before = tree_rss_kib(pid)
    started = time.monotonic()
    clients = []
    for i in range(n):
        if time.monotonic() > deadline:
            sys.exit(f"gave up after {len(clients)} connections")
        clients.append(open_one(i))
    if mode == "tcp":
        while accepted[0] < n + 200:
            if time.monotonic() > deadline:
                sys.exit(f"backend got {accepted[0]} of {n + 200}")
            time.sleep(0.1)
    time.sleep(1)
    after = tree_rss_kib(pid)
    secs = time.monotonic() - started
    print(f"{mode} {n} {before} {after} {(after - before) / n:.2f} {secs:.1f}", flush=True)
    for s in clients:
        s.close()


if __name__ == "__main__":
    main()
