#!/usr/bin/env python3
"""What receiving a large upload costs, loopback only, about a minute.

  bench/upload.py [SIZE_MIB]   a SIZE_MIB (default 1024) file of random bytes PUT with curl
                               (`curl -T`, Content-Length, 100-continue) into
                               `socketserver http --upload --quiet` in async and threading
                               mode, 3 rounds each, interleaved: MiB/s (wall time of the
                               upload, fsync included) and the server's CPU seconds per MiB
                               (from /proc). The target directory is a temporary directory
                               under $TMPDIR (its file system's write speed is part of it).

Needs a release build (cargo build --release -p socketserver-cli) and curl.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/socketserver")


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release -p socketserver-cli")
    work = tempfile.mkdtemp()
    source = os.path.join(work, "source.bin")
    with open(source, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    results = {"async": [], "threading": []}
    for rnd in range(3):
        for mode in results:
            site = os.path.join(work, f"site-{mode}-{rnd}")
            os.mkdir(site)
            proc = subprocess.Popen([BIN, "http", "--listen", "tcp://127.0.0.1:0", "--dir", site,
                                     "--mode", mode, "--upload", "--quiet",
                                     "--max-upload-bytes", str((mib + 1) << 20)],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            url = proc.stdout.readline().split()[-1].replace("tcp://", "http://")
            try:
                before = cpu(proc.pid)
                start = time.monotonic()
                out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                      "-T", source, url + "/up.bin"],
                                     capture_output=True, text=True).stdout
                took = time.monotonic() - start
                used = cpu(proc.pid) - before
                if out != "201" or os.path.getsize(os.path.join(site, "up.bin")) != mib << 20:
                    sys.exit(f"{mode}: the upload failed ({out})")
                results[mode].append((mib / took, used / mib))
            finally:
                proc.terminate()
                proc.wait()
                shutil.rmtree(site)
    print(f"PUT of {mib} MiB with curl -T, medians of 3 rounds")
    for mode, rounds in results.items():
        rate = statistics.median(r[0] for r in rounds)
        per = statistics.median(r[1] for r in rounds)
        print(f"{mode:<10} {rate:8.0f} MiB/s   server CPU {per * 1000:.2f} ms per MiB")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
