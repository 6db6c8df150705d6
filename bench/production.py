#!/usr/bin/env python3
"""Measurements for "Running in production", loopback only, a few seconds each.

  bench/production.py spread   how two worker processes share connections (--processes 2):
                               each worker's CPU seconds under loadgen echo c100, connect c10
                               and echo c1 (a single connection goes to one worker)
  bench/production.py metrics  --metrics off and on, interleaved, 3 rounds: echo c100 req/s
                               and server CPU (and HTTP 100 B with wrk, when it is installed)

Needs release builds: cargo build --release -p socketserver-cli -p loadgen.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/socketserver")
LOADGEN = os.path.join(ROOT, "target/release/loadgen")


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def start(args):
    proc = subprocess.Popen([BIN] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().split()[-1]
    return proc, url


def loadgen(kind, url, extra, secs=3):
    out = subprocess.run([LOADGEN, kind, "--addr", url, "--duration", str(secs),
                          "--warmup", "0.5", "--threads", "1"] + extra,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread():
    for service, kind, extra in [("echo", "echo", ["--connections", "100", "--size", "64"]),
                                 ("upper", "connect", ["--clients", "10"]),
                                 ("echo", "echo", ["--connections", "1", "--size", "64"])]:
        proc, url = start([service, "--listen", "tcp://127.0.0.1:0", "--processes", "2",
                           "--mode", "async", "--workers", "1", "--quiet"])
        time.sleep(0.5)
        workers = children(proc.pid)
        before = [cpu(w) for w in workers]
        result = loadgen(kind, url, extra)
        used = [round(cpu(w) - b, 2) for w, b in zip(workers, before)]
        print(f"{service} {kind} {' '.join(extra)}: worker CPU s {used}, "
              f"{result['rps']:.0f} req/s, errors {result['errors']}")
        proc.terminate()
        proc.wait()


def metrics():
    site = tempfile.mkdtemp()
    with open(os.path.join(site, "small.txt"), "w") as f:
        f.write("x" * 100)
    wrk = shutil.which("wrk")
    for rnd in range(3):
        for label, flags in [("off", []), ("on", ["--metrics", "tcp://127.0.0.1:0"])]:
            proc, url = start(["echo", "--listen", "tcp://127.0.0.1:0", "--mode", "async",
                               "--workers", "1", "--quiet"] + flags)
            time.sleep(0.3)
            before = cpu(proc.pid)
            result = loadgen("echo", url, ["--connections", "100", "--size", "64"])
            used = cpu(proc.pid) - before
            print(f"round {rnd} metrics {label}: echo c100 {result['rps']:.0f} req/s, "
                  f"server CPU {used * 1e6 / (result['rps'] * 3.5):.2f} us/req")
            proc.terminate()
            proc.wait()
            if not wrk:
                continue
            proc, url = start(["http", "--listen", "tcp://127.0.0.1:0", "--dir", site,
                               "--mode", "async", "--workers", "1", "--quiet"] + flags)
            time.sleep(0.3)
            before = cpu(proc.pid)
            out = subprocess.run([wrk, "-t1", "-c100", "-d3s",
                                  url.replace("tcp://", "http://") + "/small.txt"],
                                 capture_output=True, text=True).stdout
            used = cpu(proc.pid) - before
            rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
            print(f"round {rnd} metrics {label}: http 100 B c100 {rps:.0f} req/s, "
                  f"server CPU {used * 1e6 / (rps * 3):.2f} us/req")
            proc.terminate()
            proc.wait()
    shutil.rmtree(site)


if __name__ == "__main__":
    {"spread": spread, "metrics": metrics}.get(sys.argv[1] if len(sys.argv) > 1 else "",
                                                lambda: sys.exit(__doc__))()
