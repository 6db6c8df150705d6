#!/usr/bin/env python3
"""Turn bench/run's results into BENCHMARKS.md (printed on stdout).

    python3 bench/report.py --machine machine.json --workloads workloads.tsv \
        [--elapsed SECONDS] results.jsonl > BENCHMARKS.md

results.jsonl has one line per run, written by bench/run: workload, server, kind and variant
(how the servers were configured: plain, log, tls, gzip, gzip-static), repeat, status, the server
and client commands (and nginx's configuration file), the client's output file (loadgen's JSON
line, or wrk's, h2load's or ab's text), the probe (one curl GET before the run) and the regex it
should match, the server's and the client's CPU ticks over the measured window, the client's CPU
time over its whole run, the access log's lines and bytes (log variant), and the connections
established / still queued at the server mid-run (echo workloads).

Only the standard library; Python 3.8 or later.
"""

import argparse
import json
import os
import re
import statistics
import sys
from collections import OrderedDict, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def strip_root(cmd):
    return cmd.replace(ROOT + "/", "")


# ---------------------------------------------------------------------------- parsing


def parse_loadgen(text):
    """The last JSON line of loadgen's output, or None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def wrk_time_us(value):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", value)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


# wrk prints sizes in binary units ("26.86MB" is 26.86 × 2^20 bytes).
SIZES = {"B": 1, "KB": 2 ** 10, "MB": 2 ** 20, "GB": 2 ** 30, "TB": 2 ** 40}


def wrk_bytes(value):
    m = re.fullmatch(r"([0-9.]+)([KMGT]?B)", value)
    return float(m.group(1)) * SIZES[m.group(2)] if m else None


def parse_wrk(text):
    """wrk --latency output → the same keys as loadgen's JSON line, or None."""
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if not m:
        return None
    out = {"rps": float(m.group(1)), "client": "wrk"}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(\w+)(?:, ([0-9.]+[KMGT]?B) read)?", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["duration_s"] = wrk_time_us(m.group(2) + m.group(3)) / 1e6
        read = wrk_bytes(m.group(4)) if m.group(4) else None
        if read is not None and out["duration_s"]:
            out["bytes_per_s"] = read / out["duration_s"]
            # Bytes read (headers included) per completed response; with large files, answers
            # still under way at the end count in the bytes, not in the requests.
            out["resp_bytes"] = read / out["requests"] if out["requests"] else None
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        out["max_us"] = wrk_time_us(m.group(3))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(r"^\s*%s%%\s+(\S+)" % pct, text, re.M)
        if m:
            out[key] = wrk_time_us(m.group(1))
    errors = 0
    detail = []
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        names = ("connect", "read", "write", "timeout")
        for name, n in zip(names, m.groups()):
            if int(n):
                errors += int(n)
                detail.append("%s %s" % (n, name))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
        detail.append("%s non-2xx" % m.group(1))
    out["errors"] = errors
    out["error_detail"] = ", ".join(detail)
    return out


def h2load_time_us(value):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", value)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_h2load(text):
    """h2load's summary → the same keys, or None. It has no latency percentiles: mean and max
    of "time for request"."""
    m = re.search(r"^finished in ([0-9.]+)(\w+), ([0-9.]+) req/s", text, re.M)
    if not m:
        return None
    out = {"rps": float(m.group(3)), "client": "h2load",
           "duration_s": h2load_time_us(m.group(1) + m.group(2)) / 1e6}
    detail = []
    errors = 0
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if m:
        done, failed, errored, timeout = (int(m.group(i)) for i in (3, 5, 6, 7))
        out["requests"] = done
        # "failed" includes the errored ones; timeouts are counted apart.
        errors = max(failed, errored + timeout)
        for n, name in ((failed, "failed"), (errored, "errored"), (timeout, "timeout")):
            if n:
                detail.append("%d %s" % (n, name))
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m:
        bad = sum(int(m.group(i)) for i in (2, 3, 4))
        if bad:
            detail.append("%d non-2xx" % bad)
            errors = max(errors, bad)
    m = re.search(r"^traffic: \S+ \((\d+)\) total", text, re.M)
    if m and out["duration_s"]:
        out["bytes_per_s"] = int(m.group(1)) / out["duration_s"]
        out["resp_bytes"] = int(m.group(1)) / out["requests"] if out.get("requests") else None
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        out["max_us"] = h2load_time_us(m.group(2))
        out["mean_us"] = h2load_time_us(m.group(3))
    out["errors"] = errors
    out["error_detail"] = ", ".join(detail)
    return out


def parse_ab(text):
    """ab's summary → the same keys, or None. Its percentiles are in whole milliseconds."""
    m = re.search(r"^Requests per second:\s+([0-9.]+)", text, re.M)
    if not m:
        return None
    out = {"rps": float(m.group(1)), "client": "ab"}
    m = re.search(r"^Complete requests:\s+(\d+)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"^Time taken for tests:\s+([0-9.]+) seconds", text, re.M)
    if m:
        out["duration_s"] = float(m.group(1))
    m = re.search(r"^Keep-Alive requests:\s+(\d+)", text, re.M)
    out["keepalive"] = int(m.group(1)) if m else 0
    m = re.search(r"^Total transferred:\s+(\d+) bytes", text, re.M)
    if m and out.get("duration_s"):
        out["bytes_per_s"] = int(m.group(1)) / out["duration_s"]
        out["resp_bytes"] = int(m.group(1)) / out["requests"] if out.get("requests") else None
    for pct, key in (("50", "p50_us"), ("99", "p99_us"), ("100", "max_us")):
        m = re.search(r"^\s*%s%%\s+(\d+)" % pct, text, re.M)
        if m:
            out[key] = int(m.group(1)) * 1e3
    errors = 0
    detail = []
    m = re.search(r"^Failed requests:\s+(\d+)", text, re.M)
    if m and int(m.group(1)):
        errors += int(m.group(1))
        why = re.search(r"^\s+\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)",
                        text, re.M)
        detail.append("%s failed%s" % (m.group(1), " (connect %s, receive %s, length %s, exceptions %s)"
                                       % why.groups() if why else ""))
    m = re.search(r"^Non-2xx responses:\s+(\d+)", text, re.M)
    if m and int(m.group(1)):
        errors += int(m.group(1))
        detail.append("%s non-2xx" % m.group(1))
    out["errors"] = errors
    out["error_detail"] = ", ".join(detail)
    return out


def load_runs(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            rec["metrics"] = None
            out_path = rec.get("client_out")
            if out_path:
                try:
                    with open(out_path, errors="replace") as f2:
                        text = f2.read()
                except OSError:
                    text = ""
                rec["metrics"] = (parse_wrk(text) or parse_h2load(text) or parse_ab(text)
                                  or parse_loadgen(text))
            m = rec["metrics"]
            if m:
                tck = float(rec.get("clk_tck", 100))
                cpu_s = rec.get("server_ticks", 0) / tck
                window = rec.get("cpu_window_s") or 0
                # The CPU window is timed by bench/run to match the client's measured window;
                # the requests (and bytes) in it are estimated at the client's rate.
                req = (m.get("rps") or 0) * window
                m["server_cpu_us_per_req"] = cpu_s * 1e6 / req if req else None
                m["server_util"] = cpu_s / window if window else None
                mib = (m.get("bytes_per_s") or 0) * window / 2 ** 20
                m["mib_per_s"] = m["bytes_per_s"] / 2 ** 20 if m.get("bytes_per_s") else None
                m["server_cpu_us_per_mib"] = cpu_s * 1e6 / mib if mib else None
                if rec.get("client_ticks") is not None and window:
                    # The client's process group over the same window, from /proc.
                    m["client_util"] = rec["client_ticks"] / tck / window
                    m["client_cpu_us_per_mib"] = rec["client_ticks"] / tck * 1e6 / mib if mib else None
                else:
                    # Older results: the client's user+sys time over its whole run.
                    wall = rec.get("client_wall_s") or 0
                    m["client_util"] = rec.get("client_cpu_s", 0) / wall if wall else None
                # Other work on CPUs 0-1 during the window, and time the host stole from them.
                for key, out in (("others_ticks", "others_util"), ("steal_ticks", "steal_util")):
                    if rec.get(key) is not None and window:
                        m[out] = rec[key] / tck / window
                if rec.get("log_lines") is not None and req:
                    m["log_lines_per_req"] = rec["log_lines"] / ((m.get("requests") or req) or 1)
                    m["log_bytes_per_line"] = (rec["log_bytes"] / rec["log_lines"]
                                               if rec["log_lines"] else None)
            runs.append(rec)
    return runs


# ---------------------------------------------------------------------------- formatting


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_rps(v):
    if v is None:
        return "–"
    if v >= 10000:
        return "%.1fk" % (v / 1000)
    if v >= 1000:
        return "%.2fk" % (v / 1000)
    return "%.0f" % v


def fmt_us(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return "%.2f s" % (v / 1e6)
    if v >= 1e3:
        return "%.1f ms" % (v / 1e3)
    return "%.0f µs" % v


def fmt_cpu(v):
    return "–" if v is None else ("%.1f" % v if v < 100 else "%.0f" % v)


def fmt_pct(v):
    return "–" if v is None else "%.0f%%" % (100 * v)


def fmt_ratio(v):
    return "–" if v is None else "%.2f×" % v


def is_ours(server):
    return server.startswith("ours-")


def is_http(workload):
    return workload.startswith(("http-", "https-"))


# Rows of ours shown for information, not candidates for "our best": ours-async-cached answers
# a compressed file from its cache while nginx (and ours-async there) compress every answer.
NOT_BEST = {"ours-async-cached"}

# The client's core this busy over the measured window: the row measures the client as much
# as the server (req/s is then a lower bound of what the server could do).
CLIENT_LIMITED = 0.9
CLIENT_MARK = "‡"
# A run with this much other work on the two pinned CPUs (fraction of one core), or this much
# stolen time, is listed under its table as disturbed.
DISTURBED_OTHERS = 0.10
DISTURBED_STEAL = 0.05


def client_limited(r):
    return r.client_util is not None and r.client_util >= CLIENT_LIMITED


# Which peer is "Python's equivalent" of each of our modes, per kind of workload.
PY_EQUIVALENT = {
    "ours-sync": "py-sync",
    "ours-threading": "py-threading",
    "ours-fork": "py-forking",
}

DESCRIPTIONS = {
    "ours-sync": "socketserver `--mode sync`",
    "ours-threading": "socketserver `--mode threading` (thread per connection)",
    "ours-pool": "socketserver `--mode pool` (default workers: 4 per core of the one it is pinned to = 4)",
    "ours-fork": "socketserver `--mode fork` (default `--max-children 40`)",
    "ours-async": "socketserver `--mode async` (default: one event loop per core of the one it is pinned to = 1, plus 4 workers; the loop accepts)",
    "ours-async-handoff": "socketserver `--mode async --accept handoff` (the serving thread accepts and hands connections to the loop)",
    "ours-async-reuseport": "socketserver `--mode async --accept reuseport` (a SO_REUSEPORT listener per loop; with one loop, one listener)",
    "tokio": "tokio, multi-thread runtime (one worker: pinned, it sees one CPU), a task per "
             "connection (bench/peers/tokio_echo)",
    "mio": "a single-threaded mio (epoll) loop (bench/peers/mio_echo)",
    "std-threads": "std, a thread per connection (bench/peers/std_echo; std's listen backlog is 128)",
    "std-blocking": "std, a blocking single-thread `recv_from`/`send_to` loop (bench/peers/std_echo udp)",
    "py-sync": "Python `socketserver.TCPServer`/`UDPServer` (bench/peers/python_servers.py)",
    "py-threading": "Python `ThreadingTCPServer`/`ThreadingUDPServer`",
    "py-forking": "Python `ForkingTCPServer`/`ForkingUDPServer` (max_children 40)",
    "py-http.server": "`python3 -m http.server --bind 127.0.0.1` (ThreadingHTTPServer, HTTP/1.0)",
    "ours-async-cached": "socketserver `--mode async` with its default compression cache (each "
                         "encoding of a file compressed once, then answered from memory); only on "
                         "http-gzip-100KiB-c10, for information (never \"our best\")",
    "nginx": "nginx, 1 worker process, sendfile on, access log off, no `mime.types` (every file is "
             "`text/plain`, the default_type); per-workload changes under Server configurations",
}

# What each variant changes in the servers' configuration (bench/run's start_server).
VARIANTS = OrderedDict([
    ("plain", "ours `--quiet --dir www`; nginx as above"),
    ("log", "access log on: ours without `--quiet` (one line per request on stderr, which goes to "
            "the run's `logs/RUN.server.err`); nginx `access_log logs/RUN.access.log combined "
            "buffer=64k flush=1s` instead of `access_log off`"),
    ("tls", "HTTPS, TLS 1.3 only: an ECDSA P-256 self-signed certificate made once per run "
            "(`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "
            "/CN=localhost -days 2`); ours `--tls-cert CERT --tls-key KEY` (rustls, ring); nginx "
            "`listen ... ssl`, `ssl_certificate`, `ssl_certificate_key`, `ssl_protocols TLSv1.3` "
            "(OpenSSL; session tickets on by default, wrk never resumes)"),
    ("gzip", "compression on the fly, gzip level 3 on both sides: ours `--compress-cache 0` "
             "(every answer compressed anew; ours-async-cached keeps the default cache); nginx "
             "`gzip on; gzip_comp_level 3; gzip_types text/plain; gzip_vary on;` (`gzip_vary` "
             "for the same `Vary` header as ours)"),
    ("gzip-static", "a precompressed sibling, `static/text.txt.gz` (`gzip -k -9`): ours as is (it "
                    "serves siblings by default); nginx `gzip_static on; gzip_vary on;`"),
])

WORKLOAD_TITLES = {
    "echo-64B-c1": "Echo, 64 B, 1 connection",
    "echo-64B-c10": "Echo, 64 B, 10 connections",
    "echo-64B-c100": "Echo, 64 B, 100 connections",
    "echo-64B-c1000": "Echo, 64 B, 1,000 connections",
    "echo-64B-c100-2threads": "Echo, 64 B, 100 connections, two client threads (load generator check)",
    "connect-c10": "Connect per request (`upper`), 10 clients",
    "udp-64B-c10": "UDP echo, 64 B, 10 clients",
    "http-100B-c10": "HTTP GET of a 100-byte file, 10 connections (keep-alive)",
    "http-100B-c100": "HTTP GET of a 100-byte file, 100 connections (keep-alive)",
    "http-100B-c500": "HTTP GET of a 100-byte file, 500 connections (keep-alive)",
    "http-1MiB-c10": "HTTP GET of a 1 MiB file, 10 connections (keep-alive)",
    "http-1MiB-c100": "HTTP GET of a 1 MiB file, 100 connections (keep-alive)",
    "http-1MiB-c500": "HTTP GET of a 1 MiB file, 500 connections (keep-alive)",
    "http-4KiB-c10": "HTTP GET of a 4 KiB file, 10 connections (keep-alive)",
    "http-4KiB-c100": "HTTP GET of a 4 KiB file, 100 connections (keep-alive)",
    "http-4KiB-c500": "HTTP GET of a 4 KiB file, 500 connections (keep-alive)",
    "http-100MiB-c10": "HTTP GET of a 100 MiB file, 10 connections (keep-alive)",
    "http-100B-close-c10": "HTTP GET of a 100-byte file, 10 connections, `Connection: close` "
                           "(a new TCP connection per request)",
    "http-100B-close-c100": "HTTP GET of a 100-byte file, 100 connections, `Connection: close` "
                            "(a new TCP connection per request)",
    "http-100B-log-c10": "HTTP GET of a 100-byte file, 10 connections (keep-alive), access log on",
    "http-100B-log-c100": "HTTP GET of a 100-byte file, 100 connections (keep-alive), access log on",
    "https-100B-c10": "HTTPS (TLS 1.3) GET of a 100-byte file, 10 connections (keep-alive)",
    "https-100B-c50": "HTTPS (TLS 1.3) GET of a 100-byte file, 50 connections (keep-alive)",
    "https-handshake-c10": "New TLS 1.3 connections per second: HTTPS GET of a 100-byte file with "
                           "`Connection: close`, 10 connections",
    "http-gzip-100KiB-c10": "HTTP GET of a 100 KiB text with `Accept-Encoding: gzip`, compressed "
                            "on the fly, 10 connections (keep-alive)",
    "http-gzip-static-100KiB-c10": "HTTP GET of a 100 KiB text with `Accept-Encoding: gzip`, from "
                                   "a precompressed `.gz` sibling, 10 connections (keep-alive)",
    "http-100B-c100-h2load": "HTTP GET of a 100-byte file, 100 connections (keep-alive), "
                             "h2load --h1 as the client",
    "http-100B-c100-ab": "HTTP GET of a 100-byte file, 100 connections (HTTP/1.0 keep-alive), "
                         "ab -k as the client",
}

# What a workload measures, when the title does not say it all (printed under the title).
WORKLOAD_NOTES = {
    "http-100MiB-c10": "wrk reads 8 KiB at a time, so the client is the bottleneck long before "
                       "a sendfile server is: compare **server CPU µs/MiB** (server CPU over the "
                       "bytes wrk read in the window), not req/s.",
    "http-100B-close-c10": "Every request opens a connection, sends one request, reads the answer "
                           "and sees the server close: accept, connection setup and teardown "
                           "dominate.",
    "http-100B-close-c100": "Every request opens a connection, sends one request, reads the answer "
                            "and sees the server close: accept, connection setup and teardown "
                            "dominate.",
    "http-100B-log-c10": "Compare with http-100B-c10 (log off): the difference is the cost of "
                         "the access log. Ours writes its own line format to stderr (a file); "
                         "nginx the `combined` format through a 64 KiB buffer.",
    "http-100B-log-c100": "Compare with http-100B-c100 (log off): the difference is the cost of "
                          "the access log.",
    "https-100B-c10": "Keep-alive over TLS: one handshake per connection at the start, then "
                      "record encryption of every answer (no sendfile for either server).",
    "https-100B-c50": "Keep-alive over TLS: one handshake per connection at the start, then "
                      "record encryption of every answer (no sendfile for either server).",
    "https-handshake-c10": "wrk sends `Connection: close`, so the server closes after each answer "
                           "and wrk reconnects: every request is a new TCP connection and a full "
                           "TLS 1.3 handshake (ECDHE key exchange, an ECDSA P-256 signature by "
                           "the server; wrk never resumes a session). req/s here is new TLS "
                           "connections per second; the client does its half of every handshake "
                           "on one core too.",
    "http-gzip-100KiB-c10": "Both compress every answer at gzip level 3 (ours with "
                            "`--compress-cache 0`); ours-async-cached is our default, which "
                            "compresses the file once and answers from memory (not counted as "
                            "our best). bytes/resp is the compressed answer with its headers.",
    "http-gzip-static-100KiB-c10": "Both send `static/text.txt.gz` (`gzip -9`) as is: the "
                                   "compressed file's bytes with sendfile, no compression.",
    "http-100B-c100-h2load": "h2load reports no latency percentiles: p50 and p99 are empty, the "
                             "mean is given below.",
    "http-100B-c100-ab": "ab speaks HTTP/1.0 with `Connection: Keep-Alive`: the server must answer "
                         "with `Connection: keep-alive` to keep the connection; the count of "
                         "kept-alive requests is given below. Percentiles in whole milliseconds.",
}


def conns_of(workload):
    m = re.search(r"-c(\d+)", workload)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------- summary


class Row:
    """The repeats of one server on one workload."""

    def __init__(self, server, runs):
        self.server = server
        self.runs = runs
        ok = [r["metrics"] for r in runs if r["metrics"] and r["metrics"].get("rps") is not None]
        self.ok = ok
        rps = [m["rps"] for m in ok]
        self.rps = med(rps)
        self.rps_min = min(rps) if rps else None
        self.rps_max = max(rps) if rps else None
        self.p50 = med([m.get("p50_us") for m in ok])
        self.p99 = med([m.get("p99_us") for m in ok])
        self.max = max([m.get("max_us") or 0 for m in ok]) if ok else None
        self.cpu = med([m.get("server_cpu_us_per_req") for m in ok])
        self.cpu_mib = med([m.get("server_cpu_us_per_mib") for m in ok])
        self.client_cpu_mib = med([m.get("client_cpu_us_per_mib") for m in ok])
        self.mib_s = med([m.get("mib_per_s") for m in ok])
        self.resp_bytes = med([m.get("resp_bytes") for m in ok])
        self.mean = med([m.get("mean_us") for m in ok])
        self.keepalive = [(m.get("keepalive"), m.get("requests")) for m in ok if "keepalive" in m]
        self.log_lines_per_req = med([m.get("log_lines_per_req") for m in ok])
        self.log_bytes_per_line = med([m.get("log_bytes_per_line") for m in ok])
        self.client = ok[0].get("client", "loadgen") if ok else None
        self.util = med([m.get("server_util") for m in ok])
        self.client_util = med([m.get("client_util") for m in ok])
        self.errors = med([m.get("errors") for m in ok])
        details = sorted({m.get("error_detail") for m in ok if m.get("error_detail")})
        self.error_detail = details[-1] if details else ""
        statuses = [r.get("status", "?") for r in runs]
        self.bad = [s for s in statuses if s != "ok"]
        self.accepted = med(
            [r["estab_mid"] - r["queued_mid"] for r in runs if r.get("estab_mid") is not None]
        )
        self.probe = sorted({r.get("probe") for r in runs if r.get("probe")})
        # Probes that are not the answer bench/run expected (status, body bytes, encoding, TLS).
        self.bad_probe = sorted({r.get("probe") or "none" for r in runs
                                 if r.get("probe_expect")
                                 and not re.search(r["probe_expect"], r.get("probe") or "")})
        if not any(r.get("probe_expect") for r in runs):
            # Older results: the probe was always GET /small.txt.
            self.bad_probe = [p for p in self.probe if p != "200 100"]
        self.unserved = med([m.get("unserved") for m in ok])
        self.connect_errors = med([m.get("connect_errors") for m in ok])


def served_all(r):
    """Whether a row counts for "our best": it served every connection, without many errors."""
    if r.unserved:
        return False
    if r.errors and r.ok:
        requests = r.rps * float(r.ok[0].get("duration_s") or 1)
        if requests and r.errors > 0.01 * requests:
            return False
    return True


def best_of_ours(rows):
    """Our fastest mode among those that served every connection; when none did, the one that
    left the fewest connections unserved (then the fastest)."""
    ours = [r for r in rows if is_ours(r.server) and r.server not in NOT_BEST and r.rps]
    good = [r for r in ours if served_all(r)]
    if good:
        return max(good, key=lambda r: r.rps)
    if ours:
        return min(ours, key=lambda r: (r.unserved or 0, -r.rps))
    return None


def fmt_bytes(v):
    if v is None:
        return "–"
    if v >= 2 ** 20:
        return "%.1f MiB" % (v / 2 ** 20)
    if v >= 10 * 2 ** 10:
        return "%.1f KiB" % (v / 2 ** 10)
    return "%.0f B" % v


def fmt_mib_s(v):
    if v is None:
        return "–"
    return "%.2f GiB/s" % (v / 1024) if v >= 1024 else "%.0f MiB/s" % v


def table(workload, rows, lines):
    n = conns_of(workload)
    best = best_of_ours(rows)
    echo = workload.startswith("echo")
    http = is_http(workload)
    loadgen = not http
    large = http and "MiB" in workload
    head = ["server", "median req/s", "spread (min–max)", "p99 (median)", "p50", "server CPU µs/req",
            "server CPU", "client CPU", "errors"]
    if large:
        head[6:6] = ["MiB/s", "server CPU µs/MiB", "client CPU µs/MiB"]
    if http:
        head.append("bytes/resp")
    if loadgen:
        head.append("unserved")
    if echo:
        head.append("accepted mid-run")
    head.append("our best ÷ this")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        name = "**%s**" % r.server if best is r else r.server
        if r.rps is None:
            what = ", ".join(sorted(set(r.bad))) or "no result"
            cells = [name, what] + ["–"] * (len(head) - 2)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        mark = " " + CLIENT_MARK if client_limited(r) else ""
        spread = "%s–%s" % (fmt_rps(r.rps_min), fmt_rps(r.rps_max))
        if r.bad:
            spread += " (%d of %d runs: %s)" % (len(r.bad), len(r.runs), ", ".join(sorted(set(r.bad))))
        errors = "–" if r.errors is None else "%.0f" % r.errors
        if r.error_detail:
            errors += " (%s)" % r.error_detail
        elif r.connect_errors:
            errors += " (%.0f connect)" % r.connect_errors
        cells = [name, fmt_rps(r.rps) + mark, spread, fmt_us(r.p99), fmt_us(r.p50), fmt_cpu(r.cpu),
                 fmt_pct(r.util), fmt_pct(r.client_util) + mark, errors]
        if large:
            cells[6:6] = [fmt_mib_s(r.mib_s), fmt_cpu(r.cpu_mib), fmt_cpu(r.client_cpu_mib)]
        if http:
            cells.append(fmt_bytes(r.resp_bytes))
        if loadgen:
            cells.append("–" if r.unserved is None else "%.0f / %d" % (r.unserved, n))
        if echo:
            cells.append("–" if r.accepted is None else "%.0f / %d" % (r.accepted, n))
        if best is None or is_ours(r.server):
            cells.append("best of ours" if r is best else "")
        else:
            cells.append(fmt_ratio(best.rps / r.rps) if r.rps else "–")
        lines.append("| " + " | ".join(cells) + " |")
    busy = [r for r in rows if client_limited(r)]
    if busy:
        lines.append("")
        lines.append("%s client-limited: the client's core was at least %d%% busy over the measured "
                     "window, so that req/s is a lower bound of what the server can do; compare "
                     "server CPU per request%s there." % (
                         CLIENT_MARK, 100 * CLIENT_LIMITED, " (per MiB)" if large else ""))
    if len(busy) * 2 > len(rows):
        lines.append("")
        lines.append("The client's core is at least %d%% busy for %d of these %d servers: this "
                     "workload measures the client about as much as the servers, so compare "
                     "server CPU per request rather than req/s." % (
                         100 * CLIENT_LIMITED, len(busy), len(rows)))
    extra = []
    for r in rows:
        if r.rps is None:
            continue
        if r.client == "h2load" and (r.mean or r.max):
            extra.append("%s: mean %s, max %s" % (r.server, fmt_us(r.mean), fmt_us(r.max)))
        if r.keepalive:
            ka = sum(k or 0 for k, _ in r.keepalive)
            total = sum(t or 0 for _, t in r.keepalive)
            extra.append("%s: %d of %d requests kept alive" % (r.server, ka, total))
        if r.log_lines_per_req is not None:
            extra.append("%s: %.2f access-log lines per request, %s per line" % (
                r.server, r.log_lines_per_req, fmt_bytes(r.log_bytes_per_line)))
    if extra:
        lines.append("")
        lines.append("Per server: " + "; ".join(extra) + ".")
    if any(r.log_lines_per_req is not None for r in rows):
        lines.append("")
        lines.append("(nginx's count misses what was still in its 64 KiB log buffer when it was "
                     "killed.)")
    variants = {r0.get("variant") for r in rows for r0 in r.runs}
    if variants & {"tls", "gzip", "gzip-static"}:
        lines.append("")
        lines.append("Probe answers (status, body bytes, Content-Encoding, TLS version and cipher): "
                     + "; ".join("%s: %s" % (r.server, ", ".join(r.probe)) for r in rows if r.probe)
                     + ".")
    disturbed = []
    for r in rows:
        for run in r.runs:
            m = run.get("metrics") or {}
            o, s = m.get("others_util"), m.get("steal_util")
            if (o or 0) >= DISTURBED_OTHERS or (s or 0) >= DISTURBED_STEAL:
                disturbed.append("%s r%s (others %s, steal %s)" % (
                    r.server, run.get("repeat"), fmt_pct(o), fmt_pct(s)))
    if disturbed:
        lines.append("")
        lines.append("Disturbed runs (other work on CPUs 0-1, in % of one core, or time stolen by "
                     "the host, during the window): " + "; ".join(disturbed) + ".")
    probes = {r.server: r.bad_probe for r in rows if r.bad_probe}
    if probes:
        lines.append("")
        lines.append("**Unexpected answers** to the probe (one `curl` GET of the run's URL, with "
                     "its `Accept-Encoding`, before the run: status, body bytes, "
                     "Content-Encoding, TLS version and cipher): " + "; ".join(
                         "%s: %s" % (k, ", ".join(v)) for k, v in probes.items()))
    return best


def pct_diff(a, b):
    return 100.0 * (a / b - 1.0)


def shortfalls(results, lines):
    """Compare our best mode with the peers named by the bar of issue #5."""
    found = []

    def row(workload, server):
        for r in results.get(workload, []):
            if r.server == server and r.rps:
                return r
        return None

    def best_ours(workload):
        return best_of_ours(results.get(workload, []))

    def why(b, p, w=""):
        notes = []
        if client_limited(b):
            notes.append("the client's core was %s busy on our run, so the client may be what "
                         "limits it" % fmt_pct(b.client_util))
        if client_limited(p):
            notes.append("the client's core was %s busy on %s's run, so its req/s is a lower "
                         "bound" % (fmt_pct(p.client_util), p.server))
        if b.util is not None and b.util > 0.85:
            notes.append("our server's core is %s busy, so it is CPU-bound" % fmt_pct(b.util))
        elif b.util is not None:
            notes.append("our server's core is only %s busy: it waits rather than computes" % fmt_pct(b.util))
        if "MiB" in w and b.cpu_mib and p.cpu_mib:
            notes.append("%s µs of server CPU per MiB sent against %s (%.1f×)" % (
                fmt_cpu(b.cpu_mib), fmt_cpu(p.cpu_mib), b.cpu_mib / p.cpu_mib))
        elif b.cpu and p.cpu:
            notes.append("%s µs of server CPU per request against %s (%.1f×)" % (
                fmt_cpu(b.cpu), fmt_cpu(p.cpu), b.cpu / p.cpu))
        return "; ".join(notes)

    checks = []
    for w in ("echo-64B-c1", "echo-64B-c10", "echo-64B-c100", "echo-64B-c1000", "connect-c10"):
        checks.append((w, "tokio"))
    for w in ("echo-64B-c100", "echo-64B-c1000"):
        checks.append((w, "mio"))
    checks.append(("udp-64B-c10", "std-blocking"))
    for w in sorted(results):
        if is_http(w):
            checks.append((w, "nginx"))
    for w, peer in checks:
        b, p = best_ours(w), row(w, peer)
        if not b or not p:
            continue
        if b.rps < p.rps:
            found.append("- **%s**: our best (%s, %s req/s) is %.0f%% below %s (%s req/s); %s%s." % (
                w, b.server, fmt_rps(b.rps), -pct_diff(b.rps, p.rps), peer, fmt_rps(p.rps), why(b, p, w),
                "" if served_all(b) else
                "; and none of our modes served every connection (this one left %.0f unserved)"
                % (b.unserved or 0)))
        elif not served_all(b):
            found.append("- **%s**: our best (%s, %s req/s) is ahead of %s (%s req/s) but none of our "
                         "modes served every connection (this one left %.0f unserved)." % (
                             w, b.server, fmt_rps(b.rps), peer, fmt_rps(p.rps), b.unserved or 0))
        # Where the client was the bottleneck of either run, req/s says little: compare the
        # server's CPU per request (per MiB for the large files) with nginx's.
        if peer == "nginx" and (client_limited(b) or client_limited(p)):
            mine, theirs, unit = (b.cpu_mib, p.cpu_mib, "MiB") if "MiB" in w else (b.cpu, p.cpu, "request")
            if mine and theirs and mine > 1.10 * theirs:
                found.append("- **%s** (client-limited: client CPU %s on our run, %s on nginx's): "
                             "our best (%s) uses %s µs of server CPU per %s against nginx's %s, "
                             "%.0f%% more." % (
                                 w, fmt_pct(b.client_util), fmt_pct(p.client_util), b.server,
                                 fmt_cpu(mine), unit, fmt_cpu(theirs), pct_diff(mine, theirs)))
        if peer == "mio" and b.cpu and p.cpu and b.cpu > 1.10 * p.cpu:
            found.append("- **%s**: server CPU per request %s µs (%s) against the mio loop's %s µs: "
                         "%.0f%% more, the bar is within 10%%." % (
                             w, fmt_cpu(b.cpu), b.server, fmt_cpu(p.cpu), pct_diff(b.cpu, p.cpu)))
    b = best_ours("echo-64B-c1000")
    if b and b.p99 and b.p99 > 10000:
        found.append("- **echo-64B-c1000**: p99 of our best mode (%s) is %s, the bar is under 10 ms." % (
            b.server, fmt_us(b.p99)))
    # 40 ms stalls (Nagle / delayed ACK) in any of our modes: latency near 40 ms while the
    # server's core is mostly idle (a busy core near 40 ms is queueing, not a timer).
    for w in results:
        for r in results[w]:
            if not is_ours(r.server) or r.util is None or r.util > 0.6:
                continue
            if r.client_util is not None and r.client_util > 0.85:
                continue  # the client is saturated: its own queueing, not a timer
            if r.client == "ab":
                continue  # ab's percentiles are whole milliseconds
            for label, v in (("p50", r.p50), ("p99", r.p99)):
                if v and 38000 <= v <= 48000:
                    found.append("- **%s**: %s has %s %s while its core is only %s busy: "
                                 "possibly a 40 ms Nagle/delayed-ACK stall." % (
                                     w, r.server, label, fmt_us(v), fmt_pct(r.util)))
                    break
    # Every mode of ours ahead of Python's equivalent, serving every connection.
    starved = OrderedDict()
    for w in results:
        for r in results[w]:
            if not is_ours(r.server):
                continue
            peer = "py-http.server" if w.startswith("http-") and r.server == "ours-threading" \
                else PY_EQUIVALENT.get(r.server)
            p = row(w, peer) if peer else None
            if r.rps is None:
                found.append("- **%s**: %s produced no result (%s)." % (
                    w, r.server, ", ".join(sorted(set(r.bad))) or "?"))
                continue
            if p and r.rps < p.rps:
                found.append("- **%s**: %s (%s req/s) is behind Python's %s (%s req/s), by %.0f%%; %s." % (
                    w, r.server, fmt_rps(r.rps), peer, fmt_rps(p.rps), -pct_diff(r.rps, p.rps), why(r, p)))
            n = conns_of(w)
            if r.unserved:
                starved.setdefault(r.server, []).append(
                    "%s: %.0f of %d unserved%s" % (
                        w, r.unserved, n, "" if r.accepted is None else
                        ", %.0f accepted mid-run" % r.accepted))
            elif w.startswith("echo") and n and r.accepted is not None and r.accepted < n:
                starved.setdefault(r.server, []).append(
                    "%s: only %.0f of %d accepted mid-run" % (w, r.accepted, n))
            # loadgen counts a connection that got no reply (unserved) as an error too.
            if r.errors and r.errors > (r.unserved or 0):
                found.append("- **%s**: %s had %.0f errors per run (median)%s%s." % (
                    w, r.server, r.errors, (": " + r.error_detail) if r.error_detail else "",
                    " (%.0f connect errors)" % r.connect_errors if r.connect_errors else ""))
    for server, items in starved.items():
        found.append("- **%s does not serve every connection**: %s. The connections it leaves "
                     "wait in the kernel's queue (or for a worker) and get no reply at all in "
                     "the measured window, so its req/s and latencies describe only the "
                     "connections it served; it is not counted as \"our best\" there." % (
                         server, "; ".join(items)))
    if found:
        lines.extend(found)
    else:
        lines.append("Nothing: our best mode matched or beat every peer it is compared with.")


def peer_notes(results, lines):
    """What the peers' own defaults did (Python's backlog of 5, std's of 128...)."""
    notes = []
    for w, rows in results.items():
        for r in rows:
            if is_ours(r.server) or r.rps is None:
                continue
            n = conns_of(w)
            bits = []
            if r.unserved:
                bits.append("left %.0f of %d %s unserved" % (
                    r.unserved, n, "clients" if not w.startswith("echo") else "connections"))
            if r.connect_errors:
                bits.append("%.0f connect errors per run" % r.connect_errors)
            if "MiB" not in w and ((r.p99 or 0) >= 900000 or (r.max or 0) >= 900000):
                bits.append("p99 %s, max %s: probably SYNs dropped by a full listen queue, "
                            "retransmitted after 1 s" % (fmt_us(r.p99), fmt_us(r.max)))
            if bits:
                notes.append("- %s, %s: %s." % (w, r.server, "; ".join(bits)))
    if not notes:
        return
    lines.append("### The peers' own limits")
    lines.append("")
    lines.append("Python's servers listen with a backlog of 5 (`request_queue_size`), std's "
                 "`TcpListener` with 128, `ForkingMixIn` runs at most 40 children; in this run:")
    lines.append("")
    lines.extend(notes)
    lines.append("")


# ---------------------------------------------------------------------------- report


def normalize(machine, text):
    """A command or configuration line without what changes from run to run."""
    work = machine.get("work")
    text = re.sub(r"/logs/[^ ;/]+\.r\d+\.", "/logs/RUN.", text)
    if work:
        text = text.replace(work, "<work>")
    text = re.sub(r"127\.0\.0\.1:\d{2,5}", "127.0.0.1:PORT", text)
    return strip_root(text)


def read_conf(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except (OSError, TypeError):
        return None


def server_configurations(machine, runs, L):
    """What each variant changes, with nginx's configuration (in full for the first variant
    run, then the lines each other variant adds or changes)."""
    variants = []
    confs = OrderedDict()
    for r in runs:
        v = r.get("variant") or "plain"
        if r.get("kind", "http" if is_http(r["workload"]) else "") != "http":
            continue
        if v not in variants:
            variants.append(v)
        if r.get("server") == "nginx" and v not in confs:
            conf = read_conf(r.get("server_conf"))
            if conf:
                confs[v] = [normalize(machine, line) for line in conf]
    if not variants:
        return
    L.append("### Server configurations")
    L.append("")
    L.append("How the HTTP servers are configured, by the workload's variant (bench/run, "
             "`start_server`):")
    L.append("")
    for v in variants:
        wl = sorted({r["workload"] for r in runs if (r.get("variant") or "plain") == v
                     and is_http(r["workload"])})
        L.append("- **%s** (%s): %s" % (v, ", ".join(wl), VARIANTS.get(v, v)))
    if confs:
        base_v = "plain" if "plain" in confs else next(iter(confs))
        base = confs[base_v]
        L.append("")
        L.append("nginx's configuration (variant %s):" % base_v)
        L.append("")
        L.append("```nginx")
        L.extend(base)
        L.append("```")
        for v, conf in confs.items():
            if v == base_v:
                continue
            added = [line.strip() for line in conf if line not in base]
            removed = [line.strip() for line in base if line not in conf]
            L.append("")
            L.append("Variant %s: %s%s" % (
                v, "; ".join("`%s`" % a for a in added) or "the same",
                (", instead of " + "; ".join("`%s`" % a for a in removed)) if removed else ""))
    L.append("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", required=True)
    ap.add_argument("--workloads")
    ap.add_argument("--elapsed", type=int)
    ap.add_argument("--loadavg-end", default="")
    ap.add_argument("results")
    args = ap.parse_args()

    with open(args.machine) as f:
        machine = json.load(f)
    templates = OrderedDict()
    if args.workloads:
        with open(args.workloads) as f:
            for line in f:
                name, _, cmd = line.rstrip("\n").partition("\t")
                templates[name] = cmd
    runs = load_runs(args.results)
    by_workload = OrderedDict()
    for r in runs:
        by_workload.setdefault(r["workload"], OrderedDict()).setdefault(r["server"], []).append(r)
    results = OrderedDict(
        (w, [Row(s, rs) for s, rs in servers.items()]) for w, servers in by_workload.items())

    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append("Written by `bench/run` (issue #5); do not edit by hand, rerun it. Every workload runs "
             "against every mode of ours and every peer in the same run, alternating (for each "
             "repeat, each server in turn), each server started fresh for each run and killed "
             "after it.")
    L.append("")
    L.append("## Machine and method")
    L.append("")
    L.append("- Machine: %s × %s, %s" % (machine["nproc"], machine["cpu_model"], machine["kernel"]))
    L.append("- Toolchains: %s; %s; %s; wrk %s; %s; ab %s; %s; tokio %s; mio %s" % (
        machine["rustc"], machine["python"], machine["nginx"] or "nginx (absent)",
        (machine["wrk"] or "(absent)").split(" Copyright")[0].replace("wrk ", ""),
        machine.get("h2load") or "h2load (absent)",
        re.sub(r"^Version | <\$Revision.*$", "", machine.get("ab") or "(absent)"),
        (machine.get("openssl") or "openssl (absent)").split(" (")[0],
        machine["tokio"] or "?", machine["mio"] or "?"))
    L.append("- Commit: %s; run started %s%s" % (
        machine["git"], machine["started"],
        ", took %d min %02d s" % divmod(args.elapsed, 60) if args.elapsed else ""))
    quick = " **Quick run (`BENCH_QUICK=1`): one repeat, fewer workloads.**" if machine["quick"] else ""
    L.append("- %s repeat(s) per server and workload; each loadgen run is %s s of warm-up then %s s "
             "measured, each wrk, h2load and ab run %s s (they have no warm-up).%s" % (
                 machine["repeats"], machine["warmup_s"], machine["duration_s"],
                 machine["duration_s"], quick))
    n_runs = len(runs)
    L.append("- Why so short: %d workloads, %d runs in all (the older workloads against every mode "
             "of ours and every peer, the newer HTTP ones against ours-async and nginx only), and "
             "the whole script must stay under about 20 minutes on this machine; CPU per request "
             "(below) is steady even over short runs. Set `BENCH_DURATION`/`BENCH_WARMUP` for "
             "longer ones." % (len(by_workload), n_runs))
    if machine.get("pinned"):
        L.append("- The server is pinned to CPU 0 (`taskset -c 0`, children and threads included), "
                 "the load generator to CPU 1 (`taskset -c 1`). Loopback only.")
    L.append("- **server CPU µs/req**: utime+stime of every process of the server's process group "
             "(all threads; for fork modes the live children plus the reaped ones' cutime+cstime) "
             "over the measured window, read from `/proc/PID/stat` (%s ticks per second), divided "
             "by the requests in that window (its length × the client's req/s). The window is "
             "timed to the client's measured window and ends before the client closes its "
             "connections, so a server's work on connections it had left queued is not "
             "counted. **server CPU**: the same time over the window's "
             "length (100%% = the whole pinned core). **client CPU**: the same for the load "
             "generator (utime+stime of its process group, `timeout` and the client, in the same "
             "two passes over `/proc`) over the same window: well under 100%% means the client was "
             "not the bottleneck; %s marks a client at %d%% or more (**client-limited**: its req/s "
             "is a lower bound of what the server can do; compare server CPU instead)." % (
                 machine["clk_tck"], CLIENT_MARK, 100 * CLIENT_LIMITED))
    L.append("- **server CPU µs/MiB** (large files): the server's CPU time over the window divided "
             "by the MiB sent in it, estimated from the bytes the client read (wrk's total `read` "
             "over its duration, headers included); **client CPU µs/MiB** the same for the client (when both "
             "runs are client-limited, a server whose answers cost the client more per byte gets "
             "fewer req/s). **bytes/resp** (HTTP): those bytes over the "
             "completed responses (wrk, h2load, ab), a check that the answer has the expected size "
             "and encoding.")
    L.append("- **probe**: before each HTTP run one `curl` GET of the run's URL, with the run's "
             "`Accept-Encoding`: its status, body bytes, Content-Encoding and, over TLS, protocol "
             "and cipher must be what the file and the workload call for, or the table says so.")
    L.append("- **Disturbed runs**: bench/run also reads CPUs 0 and 1's busy time "
             "(user+nice+system+irq+softirq) and steal time from `/proc/stat` over each window; "
             "busy time beyond the server's and the client's is other work on the machine. A run "
             "with others at %d%% of a core or "
             "more, or steal at %d%% or more, is listed under its table." % (
                 100 * DISTURBED_OTHERS, 100 * DISTURBED_STEAL))
    L.append("- **unserved**: loadgen's count of connections (or clients) that completed no "
             "request in the measured window: a server that leaves some waiting.")
    L.append("- **accepted mid-run** (echo): server-side established connections minus those still "
             "in the listen queue, sampled with `ss` half-way through the measured window.")
    L.append("- Medians of the repeats; spread is min–max of req/s; errors are the median per run. "
             "**our best ÷ this** is the median req/s of our best mode (in bold: the fastest of "
             "our modes that served every connection with errors under 1%) over this server's: "
             "above 1 we are ahead.")
    L.append("- This is a shared 2-core machine (other builds may run at the same time; load "
             "average %s at the start, %s at the end): trust CPU per request more than req/s, "
             "and the ratios within one run more than absolute numbers." % (
                 machine.get("loadavg_start", "?"), args.loadavg_end or "?"))
    L.append("")
    L.append("### Servers")
    L.append("")
    seen = []
    for servers in by_workload.values():
        for s in servers:
            if s not in seen:
                seen.append(s)
    for s in seen:
        L.append("- `%s`: %s" % (s, DESCRIPTIONS.get(s, s)))
    L.append("")
    server_configurations(machine, runs, L)
    L.append("Python peers keep Python's defaults on purpose (`request_queue_size = 5`, i.e. a "
             "listen backlog of 5; `max_children = 40`; Nagle on), only `allow_reuse_address` is "
             "set. Our binary's backlog is its default, 1024.")
    L.append("")
    L.append("### Commands")
    L.append("")
    L.append("```sh")
    L.append("bench/run    # or: BENCH_QUICK=1 bench/run")
    L.append("```")
    L.append("")
    L.append("Load (`@URL@` is the server's address as it printed it; `taskset -c 1` in front):")
    L.append("")
    L.append("```text")
    for name in by_workload:
        if name in templates:
            L.append("%-28s %s" % (name, strip_root(templates[name])))
    L.append("```")
    L.append("")
    L.append("Servers, as started for the first workload of each kind and variant (`taskset -c 0` "
             "in front, a session of their own; port 0 or a free port; `<work>` is the run's "
             "directory, `RUN` the run's name):")
    L.append("")
    L.append("```text")
    shown = set()
    for w, servers in by_workload.items():
        for s, rs in servers.items():
            kind = rs[0].get("kind") or ("http" if is_http(w) else "udp" if w.startswith("udp") else
                                         "upper" if w.startswith("connect") else "echo")
            variant = rs[0].get("variant") or "plain"
            label = kind if variant == "plain" else "%s:%s" % (kind, variant)
            if (label, s) in shown:
                continue
            shown.add((label, s))
            cmd = normalize(machine, rs[0].get("server_cmd", "").replace("taskset -c 0 ", ""))
            L.append("%-16s %-20s %s" % (label, s, cmd))
    L.append("```")
    L.append("")
    L.append("## Results")
    for w, rows in results.items():
        L.append("")
        L.append("### %s" % WORKLOAD_TITLES.get(w, w))
        L.append("")
        table(w, rows, L)
    check1, check2 = results.get("echo-64B-c100"), results.get("echo-64B-c100-2threads")
    if check1 and check2:
        L.append("")
        L.append("### Is the load generator the bottleneck?")
        L.append("")
        L.append("The same echo workload (64 B, 100 connections) with one and with two client "
                 "threads, both pinned to CPU 1:")
        L.append("")
        L.append("| server | 1 thread req/s | client CPU | 2 threads req/s | client CPU | server CPU (1 thread) |")
        L.append("|---|---|---|---|---|---|")
        one = {r.server: r for r in check1}
        for r2 in check2:
            r1 = one.get(r2.server)
            if not r1:
                continue
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                r2.server, fmt_rps(r1.rps), fmt_pct(r1.client_util), fmt_rps(r2.rps),
                fmt_pct(r2.client_util), fmt_pct(r1.util)))
        L.append("")
        L.append("If the client were the bottleneck, its CPU would be near 100% while the server's "
                 "is not, and a second thread would not help anyway (one core); a server core near "
                 "100% with the client below it means the server is what is measured.")
        pairs = [(one.get(r2.server), r2) for r2 in check2 if one.get(r2.server)]
        cu = [r.client_util for p in pairs for r in p if r.client_util is not None]
        su = [r1.util for r1, _ in pairs if r1.util is not None]
        gain = [r2.rps / r1.rps for r1, r2 in pairs if r1.rps and r2.rps]
        if cu and su and gain:
            L.append("")
            L.append("In this run: client CPU %s–%s, server CPU %s–%s, and two threads changed "
                     "req/s by ×%.2f–×%.2f. %s" % (
                         fmt_pct(min(cu)), fmt_pct(max(cu)), fmt_pct(min(su)), fmt_pct(max(su)),
                         min(gain), max(gain),
                         "The client is close to its core's limit too: for the fastest servers "
                         "the req/s above are a lower bound, and server CPU per request is the "
                         "fairer comparison." if max(cu) > 0.85 else
                         "The client has headroom: the servers are what is measured."))
    L.append("")
    L.append("## Where we fall short")
    L.append("")
    L.append("Computed from the tables above against the bar of issue #5 (our best mode at least "
             "the fastest peer: tokio for echo and connect-per-request, the mio loop within 10% in "
             "CPU per request, the blocking loop for UDP, nginx for HTTP; p99 under 10 ms at "
             "1,000 connections; no 40 ms stalls; every mode ahead of Python's equivalent, "
             "serving every connection).")
    L.append("")
    shortfalls(results, L)
    L.append("")
    peer_notes(results, L)
    L.append("## Profile of the slowest ratio")
    L.append("")
    L.append("See [bench/PROFILE.md](bench/PROFILE.md): how the profile was taken, what it "
             "showed and what was changed because of it (written by hand, so a rerun of this "
             "report keeps it).")
    L.append("")
    L.append("Microbenchmarks of the hot paths (criterion): see "
             "[bench/MICROBENCHMARKS.md](bench/MICROBENCHMARKS.md).")
    worst = None
    for w, rows in results.items():
        b = best_of_ours(rows)
        peers = [r for r in rows if not is_ours(r.server) and r.rps and not r.server.startswith("py-")]
        if not b or not peers:
            continue
        fastest = max(peers, key=lambda r: r.rps)
        ratio = b.rps / fastest.rps
        if worst is None or ratio < worst[0]:
            worst = (ratio, w, b, fastest)
    if worst:
        ratio, w, b, p = worst
        L.append("")
        L.append("(In this run the slowest ratio is on %s: %s at %s req/s is %.2f× %s's %s.)" % (
            w, b.server, fmt_rps(b.rps), ratio, p.server, fmt_rps(p.rps)))
    L.append("")
    print("\n".join(L))


if __name__ == "__main__":
    main()
