#!/usr/bin/env python3
"""Turn bench/run's results into BENCHMARKS.md (printed on stdout).

    python3 bench/report.py --machine machine.json --workloads workloads.tsv \
        [--elapsed SECONDS] results.jsonl > BENCHMARKS.md

results.jsonl has one line per run, written by bench/run: workload, server, repeat, status,
the server and client commands, the client's output file (loadgen's JSON line, or wrk's text),
the server's CPU ticks over the measured window, the client's CPU time, and the connections
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


def parse_wrk(text):
    """wrk --latency output → the same keys as loadgen's JSON line, or None."""
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if not m:
        return None
    out = {"rps": float(m.group(1))}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(\w+)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["duration_s"] = wrk_time_us(m.group(2) + m.group(3)) / 1e6
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
                rec["metrics"] = parse_wrk(text) or parse_loadgen(text)
            m = rec["metrics"]
            if m:
                ticks = rec.get("server_ticks", 0)
                cpu_s = ticks / float(rec.get("clk_tck", 100))
                window = rec.get("cpu_window_s") or 0
                # The CPU window is timed by bench/run to match the client's measured window;
                # the requests in it are estimated at the client's rate.
                req = (m.get("rps") or 0) * window
                m["server_cpu_us_per_req"] = cpu_s * 1e6 / req if req else None
                m["server_util"] = cpu_s / window if window else None
                wall = rec.get("client_wall_s") or 0
                m["client_util"] = rec.get("client_cpu_s", 0) / wall if wall else None
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
    "nginx": "nginx, 1 worker process, sendfile on, access log off",
}

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
    ours = [r for r in rows if is_ours(r.server) and r.rps]
    good = [r for r in ours if served_all(r)]
    if good:
        return max(good, key=lambda r: r.rps)
    if ours:
        return min(ours, key=lambda r: (r.unserved or 0, -r.rps))
    return None


def table(workload, rows, lines):
    n = conns_of(workload)
    best = best_of_ours(rows)
    echo = workload.startswith("echo")
    loadgen = not workload.startswith("http")
    head = ["server", "median req/s", "spread (min–max)", "p99 (median)", "p50", "server CPU µs/req",
            "server CPU", "client CPU", "errors"]
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
        spread = "%s–%s" % (fmt_rps(r.rps_min), fmt_rps(r.rps_max))
        if r.bad:
            spread += " (%d of %d runs: %s)" % (len(r.bad), len(r.runs), ", ".join(sorted(set(r.bad))))
        errors = "–" if r.errors is None else "%.0f" % r.errors
        if r.error_detail:
            errors += " (%s)" % r.error_detail
        elif r.connect_errors:
            errors += " (%.0f connect)" % r.connect_errors
        cells = [name, fmt_rps(r.rps), spread, fmt_us(r.p99), fmt_us(r.p50), fmt_cpu(r.cpu),
                 fmt_pct(r.util), fmt_pct(r.client_util), errors]
        if loadgen:
            cells.append("–" if r.unserved is None else "%.0f / %d" % (r.unserved, n))
        if echo:
            cells.append("–" if r.accepted is None else "%.0f / %d" % (r.accepted, n))
        if best is None or is_ours(r.server):
            cells.append("best of ours" if r is best else "")
        else:
            cells.append(fmt_ratio(best.rps / r.rps) if r.rps else "–")
        lines.append("| " + " | ".join(cells) + " |")
    busy = [r for r in rows if r.client_util is not None and r.client_util > 0.9]
    if len(busy) * 2 > len(rows):
        lines.append("")
        lines.append("The client's core is over 90%% busy for %d of these %d servers: this "
                     "workload measures the client about as much as the servers, so compare "
                     "server CPU per request rather than req/s." % (len(busy), len(rows)))
    probes = {r.server: r.probe for r in rows if r.probe and r.probe != ["200 100"]}
    if probes:
        lines.append("")
        lines.append("Unexpected answers to the `GET /small.txt` probe before the run: " + "; ".join(
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

    def why(b, p):
        notes = []
        if b.client_util is not None and b.client_util > 0.9:
            notes.append("the client's core was %s busy on our run, so the client may be what "
                         "limits it" % fmt_pct(b.client_util))
        if b.util is not None and b.util > 0.85:
            notes.append("our server's core is %s busy, so it is CPU-bound" % fmt_pct(b.util))
        elif b.util is not None:
            notes.append("our server's core is only %s busy: it waits rather than computes" % fmt_pct(b.util))
        if b.cpu and p.cpu:
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
        if w.startswith("http-"):
            checks.append((w, "nginx"))
    for w, peer in checks:
        b, p = best_ours(w), row(w, peer)
        if not b or not p:
            continue
        if b.rps < p.rps:
            found.append("- **%s**: our best (%s, %s req/s) is %.0f%% below %s (%s req/s); %s%s." % (
                w, b.server, fmt_rps(b.rps), -pct_diff(b.rps, p.rps), peer, fmt_rps(p.rps), why(b, p),
                "" if served_all(b) else
                "; and none of our modes served every connection (this one left %.0f unserved)"
                % (b.unserved or 0)))
        elif not served_all(b):
            found.append("- **%s**: our best (%s, %s req/s) is ahead of %s (%s req/s) but none of our "
                         "modes served every connection (this one left %.0f unserved)." % (
                             w, b.server, fmt_rps(b.rps), peer, fmt_rps(p.rps), b.unserved or 0))
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
            if (r.p99 or 0) >= 900000 or (r.max or 0) >= 900000:
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
    L.append("- Toolchains: %s; %s; %s; wrk %s; tokio %s; mio %s" % (
        machine["rustc"], machine["python"], machine["nginx"] or "nginx (absent)",
        (machine["wrk"] or "(absent)").split(" Copyright")[0].replace("wrk ", ""),
        machine["tokio"], machine["mio"]))
    L.append("- Commit: %s; run started %s%s" % (
        machine["git"], machine["started"],
        ", took %d min %02d s" % divmod(args.elapsed, 60) if args.elapsed else ""))
    quick = " **Quick run (`BENCH_QUICK=1`): one repeat, fewer workloads.**" if machine["quick"] else ""
    L.append("- %s repeat(s) per server and workload; each loadgen run is %s s of warm-up then %s s "
             "measured, each wrk run %s s (wrk has no warm-up).%s" % (
                 machine["repeats"], machine["warmup_s"], machine["duration_s"],
                 machine["duration_s"], quick))
    L.append("- Why so short: 13 workloads × up to 10 servers × 3 repeats is about 300 runs, and the "
             "whole script must stay under 15 minutes on this machine; CPU per request (below) "
             "is steady even over short runs. Set `BENCH_DURATION`/`BENCH_WARMUP` for longer ones.")
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
             "length (100%% = the whole pinned core). **client CPU**: the load generator's "
             "user+sys time over its wall time: well under 100%% means the client was not the "
             "bottleneck." % machine["clk_tck"])
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
            L.append("%-24s %s" % (name, strip_root(templates[name])))
    L.append("```")
    L.append("")
    L.append("Servers, as started for the first workload of each kind (`taskset -c 0` in front, a "
             "session of their own; port 0 or a free port):")
    L.append("")
    L.append("```text")
    shown = set()
    for w, servers in by_workload.items():
        kind = "http" if w.startswith("http") else "udp" if w.startswith("udp") else \
            "upper" if w.startswith("connect") else "echo"
        for s, rs in servers.items():
            if (kind, s) in shown:
                continue
            shown.add((kind, s))
            cmd = strip_root(rs[0].get("server_cmd", "").replace("taskset -c 0 ", ""))
            L.append("%-5s %-15s %s" % (kind, s, cmd))
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
