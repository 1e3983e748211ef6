#!/usr/bin/env python3
"""Many concurrent clients against `pocketsd serve` on loopback: a measurement, not a test.

Starts the server on a model (the tiny test model by default size), warms it up, then runs
--clients threads that each send --requests txt2img requests (or stop at --seconds), and
reports how many completed, how many the full queue refused (503), other statuses, the
latency percentiles of completed and refused requests, and the server's resident memory
(VmRSS) and peak (VmHWM) before and after, read from /proc.

    tools/load-test.py --pocketsd .build/release/pocketsd --model tiny.pdm \
        [--clients 50] [--requests 4] [--seconds 120] [--queue 8] [--json]
"""
import argparse
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 3)


def post(url, body, timeout):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except Exception:
        return 0  # connection error or timeout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pocketsd", default=".build/release/pocketsd")
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--seconds", type=float, default=120, help="stop sending after this long")
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.clients <= 1000 and 1 <= args.requests <= 1000):
        parser.error("--clients and --requests must be from 1 to 1000")

    server = subprocess.Popen([args.pocketsd, "serve", "-m", args.model, "--port", "0", "--queue", str(args.queue),
                               "--threads", str(args.threads)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    match = re.search(r"http://[^ ]+:(\d+)/", line)
    if not match:
        server.kill()
        raise SystemExit("pocketsd serve did not start: " + line + server.stderr.read())
    url = f"http://127.0.0.1:{match.group(1)}/sdapi/v1/txt2img"
    body = {"prompt": "a lighthouse", "steps": args.steps, "width": args.size, "height": args.size, "seed": 1}
    post(url, body, 600)  # warm-up: the first run maps the weights
    before = memory(server.pid)

    lock = threading.Lock()
    completed, refused, other = [], [], {}
    deadline = time.monotonic() + args.seconds

    def client():
        for _ in range(args.requests):
            if time.monotonic() > deadline:
                return
            start = time.monotonic()
            status = post(url, body, 600)
            elapsed = time.monotonic() - start
            with lock:
                if status == 200:
                    completed.append(elapsed)
                elif status == 503:
                    refused.append(elapsed)
                else:
                    other[status] = other.get(status, 0) + 1
            if status == 503:
                time.sleep(0.5)  # a polite client waits a little before trying again

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    progress_at = time.monotonic()
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if time.monotonic() - progress_at > 5 and not args.json:
            with lock:
                print(f"  {time.monotonic() - started:5.1f} s: {len(completed)} completed, {len(refused)} refused",
                      file=sys.stderr)
            progress_at = time.monotonic()
    wall = time.monotonic() - started
    after = memory(server.pid)
    alive = server.poll() is None
    server.send_signal(signal.SIGTERM)
    try:
        exit_code = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        exit_code = None

    result = {
        "clients": args.clients, "requests_per_client": args.requests, "queue": args.queue,
        "steps": args.steps, "size": args.size, "wall_seconds": round(wall, 2),
        "completed": len(completed), "refused_503": len(refused), "other_statuses": other,
        "completed_latency_seconds": {p: percentile(completed, p) for p in (50, 90, 99)},
        "refused_latency_seconds": {p: percentile(refused, p) for p in (50, 90, 99)},
        "throughput_images_per_second": round(len(completed) / wall, 3) if wall > 0 else None,
        "rss_before_bytes": before.get("VmRSS"), "rss_after_bytes": after.get("VmRSS"),
        "peak_rss_before_bytes": before.get("VmHWM"), "peak_rss_after_bytes": after.get("VmHWM"),
        "server_alive_after_load": alive, "server_exit_code": exit_code,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        mib = lambda b: f"{b / 2**20:.1f} MiB" if b else "?"
        print(f"{result['completed']} completed, {result['refused_503']} refused (503), other: {other or 'none'} "
              f"in {result['wall_seconds']} s")
        print(f"latency completed p50/p90/p99: {result['completed_latency_seconds']}; refused: {result['refused_latency_seconds']}")
        print(f"RSS before {mib(before.get('VmRSS'))} (peak {mib(before.get('VmHWM'))}), "
              f"after {mib(after.get('VmRSS'))} (peak {mib(after.get('VmHWM'))}); server exit {exit_code}")
    return 0 if alive and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
