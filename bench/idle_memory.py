#!/usr/bin/env python3
"""Memory per idle keep-alive connection: ours (`--mode async --workers 1`) against nginx.

    python3 bench/idle_memory.py [CONNECTIONS]      # default 10000

For each server: start it on loopback (nginx with one worker), read the RSS of its processes,
open CONNECTIONS connections, send one request for a 100-byte file on every other one and
read its answer (half idle after a request, half idle from the start), wait a second, read
the RSS again. Prints one line per server, the bytes of RSS per connection, and the ratio.
Needs target/release/socketserver (cargo build --release) and nginx; raises its own
RLIMIT_NOFILE (run as root for more than the hard limit). Not part of the tests.
"""

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target", "release", "socketserver")
REQUEST = b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"


def rss_kib(group):
    """RSS of every process of process group `group`, in KiB."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:
                continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            pass
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {within} s")


def read_answer(conn):
    """Reads one answer with a 100-byte body."""
    got = b""
    while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 100:
        chunk = conn.recv(4096)
        if not chunk:
            raise SystemExit("the server closed a connection before answering")
        got += chunk


def measure(name, command, port, n):
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_port(port)
        time.sleep(0.3)
        before = rss_kib(server.pid)
        conns = []
        for i in range(n):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conns.append(conn)
            if i % 2 == 0:
                conn.sendall(REQUEST)
        for conn in conns[::2]:
            read_answer(conn)
        time.sleep(1.0)
        after = rss_kib(server.pid)
        per = (after - before) * 1024 / n
        print(f"{name:6} {n} connections: RSS {before} -> {after} KiB, {per:.0f} B per connection")
        for conn in conns:
            conn.close()
        return per
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    want = n + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    with tempfile.TemporaryDirectory() as tmp:
        site = os.path.join(tmp, "site")
        os.mkdir(site)
        with open(os.path.join(site, "small.txt"), "wb") as f:
            f.write(b"x" * 99 + b"\n")
        port = free_port()
        ours = measure(
            "ours",
            [OURS, "http", "--dir", site, "--listen", f"tcp://127.0.0.1:{port}",
             "--mode", "async", "--workers", "1", "--quiet"],
            port,
            n,
        )
        if not nginx:
            print("nginx: not installed, no comparison")
            return
        conf = os.path.join(tmp, "nginx.conf")
        port = free_port()
        user = "user root;" if os.getuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(
                f"worker_processes 1; worker_rlimit_nofile {want}; daemon off; {user}\n"
                f"error_log stderr; pid {tmp}/nginx.pid;\n"
                f"events {{ worker_connections {want}; }}\n"
                f"http {{ access_log off; sendfile on; client_body_temp_path {tmp}/b;\n"
                f"  proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f; uwsgi_temp_path {tmp}/u;\n"
                f"  scgi_temp_path {tmp}/s; keepalive_timeout 300s;\n"
                f"  server {{ listen 127.0.0.1:{port}; root {site}; }} }}\n"
            )
        theirs = measure("nginx", [nginx, "-e", "stderr", "-p", tmp, "-c", conf], port, n)
        print(f"ours / nginx: {ours / theirs:.2f}x the memory per connection")


if __name__ == "__main__":
    main()
