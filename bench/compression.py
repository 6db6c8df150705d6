#!/usr/bin/env python3
"""What compression costs the server, loopback only, about 40 seconds.

  bench/compression.py    a 100 KiB text file (this repository's README and sources, the
                          corpus of `cargo bench --bench compression`), served by
                          `socketserver http --mode async --workers 1 --quiet` and fetched
                          with `wrk -t1 -c10 -d3s`, each case 3 rounds interleaved:
                            identity      no Accept-Encoding: the file with sendfile
                            gzip, br, zstd on the fly, --compress-cache 0 (every answer
                                          compressed anew)
                            gzip cached   on the fly with the default cache (compressed once)
                            gzip sibling  a precompressed app.js.gz next to the file
                          and, when nginx is installed, nginx (one process, sendfile, no
                          access log) serving the same: identity, `gzip on` at
                          gzip_comp_level 3 (our gzip level), and `gzip_static on`.
                          For each: req/s, the server's CPU per request (from /proc), the
                          body's size and ratio. The server is pinned to CPU 0, wrk to CPU 1.

Needs a release build (cargo build --release -p socketserver-cli) and wrk.
"""
import gzip
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/socketserver")
SECS = 3


def corpus():
    text = b""
    for part in ["README.md", "crates/socketserver/src/http/conn.rs",
                 "crates/socketserver/src/http/parse.rs",
                 "crates/socketserver/src/http/static_files.rs"]:
        with open(os.path.join(ROOT, part), "rb") as f:
            text += f.read()
    return text[:100 * 1024]


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(site, extra):
    proc = subprocess.Popen(["taskset", "-c", "0", BIN, "http", "--listen", "tcp://127.0.0.1:0",
                             "--dir", site, "--mode", "async", "--workers", "1", "--quiet"]
                            + extra, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().split()[-1].replace("tcp://", "http://")
    return proc, url


def size(url, accept):
    req = urllib.request.Request(url, headers={"Accept-Encoding": accept} if accept else {})
    with urllib.request.urlopen(req) as r:
        return len(r.read()), r.headers.get("Content-Encoding") or "identity"


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def serve_nginx(site, gzip):
    """nginx, one process (master_process off), sendfile, no access log; `gzip` is None,
    "on" (on the fly at gzip_comp_level 3, our level) or "static" (gzip_static)."""
    work = tempfile.mkdtemp()
    port = free_port()
    extra = ""
    if gzip == "on":
        extra = ("gzip on; gzip_comp_level 3; gzip_min_length 1024; "
                 "gzip_types application/javascript text/javascript; gzip_vary on;")
    elif gzip == "static":
        extra = "gzip_static on; gzip_vary on;"
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1; error_log stderr error;
pid {work}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  include /etc/nginx/mime.types; access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{port}; root {site}; {extra} }}
}}
""")
    proc = subprocess.Popen(["taskset", "-c", "0", NGINX, "-p", work, "-c",
                             os.path.join(work, "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/app.js").read()
            break
        except OSError:
            time.sleep(0.05)
    return proc, url


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(site, extra, path, accept):
    if extra and extra[0] == "nginx":
        proc, url = serve_nginx(site, extra[1])
    else:
        proc, url = serve(site, extra)
    try:
        time.sleep(0.3)
        length, coding = size(url + path, accept)
        before = cpu(proc.pid)
        cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c10", f"-d{SECS}s", url + path]
        if accept:
            cmd[4:4] = ["-H", f"Accept-Encoding: {accept}"]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        used = cpu(proc.pid) - before
        rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
        return rps, used * 1e6 / (rps * SECS), length, coding
    finally:
        proc.terminate()
        proc.wait()


def main():
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release -p socketserver-cli")
    site = tempfile.mkdtemp()
    text = corpus()
    for name in ["app.js", "pre.js"]:
        with open(os.path.join(site, name), "wb") as f:
            f.write(text)
    with open(os.path.join(site, "pre.js.gz"), "wb") as f:
        f.write(gzip.compress(text, 9))
    cases = [("identity", [], "/app.js", None),
             ("gzip on the fly", ["--compress-cache", "0"], "/app.js", "gzip"),
             ("br on the fly", ["--compress-cache", "0"], "/app.js", "br"),
             ("zstd on the fly", ["--compress-cache", "0"], "/app.js", "zstd"),
             ("gzip cached", [], "/app.js", "gzip"),
             ("gzip sibling (gzip -9)", [], "/pre.js", "gzip")]
    if NGINX:
        cases += [("nginx identity", ["nginx", None], "/app.js", None),
                  ("nginx gzip on, level 3", ["nginx", "on"], "/app.js", "gzip"),
                  ("nginx gzip_static", ["nginx", "static"], "/pre.js", "gzip")]
    results = {name: [] for name, *_ in cases}
    for _ in range(3):
        for name, extra, path, accept in cases:
            results[name].append(run(site, extra, path, accept))
    print(f"100 KiB text ({len(text)} bytes), wrk -t1 -c10, medians of 3 rounds")
    print(f"{'case':<24} {'coding':<9} {'bytes':>7} {'ratio':>6} {'req/s':>8} {'CPU us/req':>10}")
    for name, *_ in cases:
        rounds = results[name]
        rps = statistics.median(r[0] for r in rounds)
        us = statistics.median(r[1] for r in rounds)
        length, coding = rounds[0][2], rounds[0][3]
        print(f"{name:<24} {coding:<9} {length:>7} {len(text) / length:>6.2f} {rps:>8.0f} {us:>10.1f}")
    shutil.rmtree(site)


if __name__ == "__main__":
    main()
