#!/usr/bin/env python3
"""End-to-end latency of one `qm allocate` from the CLI (issue 6: under 5 ms
median), as a user's script sees it: a new `qm` process per call, against a
`qm serve` started here (SQLite, synchronous FULL, a temporary state
directory, a free loopback port).

  bench/cli_latency.py QM [QM...] [--runs 150] [--rounds 3]

Each round runs every given client binary `--runs` times (each allocate is
followed by its release, not timed), alternating the binaries round by
round, and prints the median of each round and of the rounds, plus the
median of `qm --help` (process start-up alone). The server is the first
binary given.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd, env):
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, env=env)
    return (time.perf_counter() - start) * 1000, out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("binaries", nargs="+")
    p.add_argument("--runs", type=int, default=150)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, QM_SERVER=url)
    with tempfile.TemporaryDirectory() as state:
        server = subprocess.Popen(
            [args.binaries[0], "serve", "--listen", f"127.0.0.1:{port}",
             "--state", os.path.join(state, "state")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                sys.exit("qm serve did not start")
            alloc = {b: [] for b in args.binaries}
            start = {b: [] for b in args.binaries}
            n = 0
            for _ in range(args.rounds):
                for b in args.binaries:
                    times = []
                    for _ in range(args.runs):
                        n += 1
                        ms, out = timed(
                            [b, "allocate", json.dumps({"workflow_id": f"w{n}"})],
                            env)
                        if out.returncode != 0:
                            sys.exit(f"{b} allocate failed: {out.stdout[:300]}")
                        times.append(ms)
                        aid = json.loads(out.stdout)["result"]["allocation_id"]
                        subprocess.run(
                            [b, "release", json.dumps({"allocation_id": aid})],
                            capture_output=True, env=env, check=True)
                    alloc[b].append(statistics.median(times))
                    start[b].append(statistics.median(
                        timed([b, "--help"], env)[0] for _ in range(args.runs)))
        finally:
            server.terminate()
            server.wait()
    for b in args.binaries:
        rounds = ", ".join(f"{x:.2f}" for x in alloc[b])
        print(f"{b}: allocate median {statistics.median(alloc[b]):.2f} ms "
              f"(rounds {rounds}); --help median "
              f"{statistics.median(start[b]):.2f} ms")


if __name__ == "__main__":
    main()
