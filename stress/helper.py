#!/usr/bin/env python3
"""Helpers of scripts/stress.sh (standard library only).

  helper.py doc OUT [--late] [--churn PORTS]   the gateways' backends document
  helper.py bigdoc OUT VARIANT                 100 backends x 10 endpoints (variant a|b)
  helper.py churn URL PERIOD DURATION FINAL    POST a changed document every PERIOD s
  helper.py burst URL N BACKEND [ewma]         N requests, one connection each
  helper.py quit URL N MASTER_PID              graceful shutdown with N requests in flight
  helper.py updates URL N SAMPLE_AT DOC_A DOC_B MASTER_PID
                                               N configuration POSTs, worker RSS sampled

Each command prints "RESULT k=v ..." (and details on stderr) and exits 0 when its
own checks pass, 1 otherwise.
"""
import http.client
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time

PODS = [26101 + i for i in range(8)]   # backend servers answering 200 at once
SLOW = 26110                           # answers after SLOW_DELAY (ngx.sleep)


def backend(name, ports, lb=None, extra=None):
    b = {"name": name, "service": {"spec": {"type": "ClusterIP"}}, "port": 80,
         "endpoints": [{"address": "127.0.0.1", "port": str(p)} for p in ports],
         "sessionAffinityConfig": {"name": "", "cookieSessionAffinity": {"name": ""}},
         "upstreamHashByConfig": {}, "noServer": False}
    if lb:
        b["load-balance"] = lb
    if extra:
        b.update(extra)
    return b


def base_doc(churn_ports=None, late=False):
    doc = [backend("stress-rr", PODS[:4]),
           backend("stress-ewma", PODS[:4], "ewma"),
           backend("stress-chash", PODS[:4],
                   extra={"upstreamHashByConfig": {"upstream-hash-by": "$request_uri"}}),
           backend("stress-churn", churn_ports or PODS),
           backend("stress-slow", [SLOW])]
    if late:
        doc.append(backend("stress-late", PODS[4:6]))
    return doc


def write(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def big_doc(variant):
    """100 backends x 10 endpoints, mixed algorithms; variant b moves every endpoint."""
    port = "8080" if variant == "a" else "8081"
    docs = base_doc()
    for i in range(100):
        kind = i % 4
        b = {"name": "big-%03d" % i, "service": {"spec": {"type": "ClusterIP"}}, "port": 80,
             "endpoints": [{"address": "10.%d.%d.%d" % (1 if variant == "a" else 2, i, j),
                            "port": port} for j in range(10)],
             "sessionAffinityConfig": {"name": "", "cookieSessionAffinity": {"name": ""}},
             "upstreamHashByConfig": {}, "noServer": False}
        if kind == 1:
            b["load-balance"] = "ewma"
        elif kind == 2:
            b["upstreamHashByConfig"] = {"upstream-hash-by": "$request_uri"}
        elif kind == 3:
            b["sessionAffinityConfig"] = {"name": "cookie", "cookieSessionAffinity": {
                "name": "route", "locations": {"_": ["/"]}}}
        docs.append(b)
    return docs


def split_url(url):
    assert url.startswith("http://")
    hostport, _, path = url[7:].partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port), "/" + path


def post(conn, path, body):
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    text = r.read()
    return r.status, text


def cmd_churn(url, period, duration, final):
    """POST stress-churn with a random subset of PODS every PERIOD s for DURATION s,
    then a last document without port FINAL. Prints the number of POSTs, the ones not
    answered 201, and how many documents listed FINAL."""
    host, port, path = split_url(url)
    rng = random.Random(6)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    n = bad = with_final = 0
    start = time.monotonic()
    nxt = start
    while time.monotonic() - start < duration:
        ports = sorted(rng.sample(PODS, rng.randint(2, len(PODS))))
        with_final += final in ports
        try:
            status, text = post(conn, path, json.dumps(base_doc(ports)))
        except (OSError, http.client.HTTPException) as e:
            status, text = 0, str(e).encode()
            conn = http.client.HTTPConnection(host, port, timeout=10)
        n += 1
        if status != 201:
            bad += 1
            print("churn: POST answered %s: %r" % (status, text[:200]), file=sys.stderr)
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
    last = [p for p in PODS if p != final]
    status, text = post(conn, path, json.dumps(base_doc(last)))
    n += 1
    if status != 201:
        bad += 1
    print("RESULT posts=%d bad=%d with_final=%d elapsed=%.1f"
          % (n, bad, with_final, time.monotonic() - start))
    return 0 if bad == 0 else 1


def one_request(host, port, backend, path="/"):
    """One request on its own connection: (status or None, headers dict, error text)."""
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: stress\r\nX-Backend: %s\r\n"
                   "Connection: close\r\n\r\n" % (path, backend)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def finite(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v)


def cmd_burst(url, n, backend, ewma=False):
    host, port, _ = split_url(url)
    lock = threading.Lock()
    res = {"ok": 0, "fail": 0, "badscore": 0, "workers": set()}

    def worker(count):
        for i in range(count):
            try:
                status, headers = one_request(host, port, backend, "/b%d" % i)
            except OSError as e:
                status, headers = None, {}
                print("burst: %s" % e, file=sys.stderr)
            with lock:
                if status == 200:
                    res["ok"] += 1
                else:
                    res["fail"] += 1
                    if status:
                        print("burst: status %s" % status, file=sys.stderr)
                if ewma and not finite(headers.get("x-ewma-score")):
                    res["badscore"] += 1
                if "x-worker" in headers:
                    res["workers"].add(headers["x-worker"])

    threads = [threading.Thread(target=worker, args=(n // 4 + (i < n % 4),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("RESULT requests=%d ok=%d fail=%d badscore=%d workers=%s"
          % (n, res["ok"], res["fail"], res["badscore"], ",".join(sorted(res["workers"]))))
    return 0 if res["fail"] == 0 and res["badscore"] == 0 else 1


def cmd_quit(url, n, master):
    """N threads each send one request to the slow backend (own connection, no
    keep-alive); once all N are sent, wait 150 ms (they are accepted and waiting for the
    backend), send SIGQUIT to the master, then collect every outcome. Requests started
    before the quit must all complete with 200, after the quit. Meanwhile LATE threads
    keep starting new requests until refused (reported, not counted as lost)."""
    host, port, _ = split_url(url)
    sent = threading.Barrier(n + 1)
    out = [None] * n

    def inflight(i):
        s = None
        try:
            s = socket.create_connection((host, port), timeout=15)
            s.sendall(b"GET /slow%d HTTP/1.0\r\nHost: stress\r\nX-Backend: stress-slow\r\n\r\n" % i)
        except OSError as e:
            out[i] = ("send-error", str(e), time.time())
            sent.wait()
            return
        sent.wait()
        try:
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            out[i] = (line.split()[1] if len(line.split()) > 1 else "empty", line, time.time())
        except OSError as e:
            out[i] = ("error", str(e), time.time())
        finally:
            s.close()

    late = {"refused": 0, "ok": 0, "other": 0}
    stop = threading.Event()
    quit_at = [None]

    def late_client():
        while not stop.is_set():
            try:
                status, _ = one_request(host, port, "stress-rr")
                late["ok" if status == 200 else "other"] += 1
            except OSError:
                if quit_at[0] is None:
                    late["other"] += 1
                else:
                    late["refused"] += 1
                    return
            except (IndexError, ValueError):
                late["other" if quit_at[0] is None else "refused"] += 1
            time.sleep(0.005)

    lt = [threading.Thread(target=late_client) for _ in range(2)]
    for t in lt:
        t.start()
    threads = [threading.Thread(target=inflight, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    sent.wait()
    time.sleep(0.15)
    quit_at[0] = time.time()
    os.kill(master, signal.SIGQUIT)
    for t in threads:
        t.join()
    stop.set()
    for t in lt:
        t.join()
    ok = sum(1 for o in out if o and o[0] == "200" and o[2] > quit_at[0])
    for o in out:
        if not (o and o[0] == "200"):
            print("quit: in-flight request ended with %r" % (o,), file=sys.stderr)
    gone = False
    for _ in range(100):
        try:
            os.kill(master, 0)
        except ProcessLookupError:
            gone = True
            break
        time.sleep(0.1)
    print("RESULT inflight=%d completed_ok=%d lost=%d late_ok=%d late_refused=%d late_other=%d master_exited=%d"
          % (n, ok, n - ok, late["ok"], late["refused"], late["other"], gone))
    return 0 if ok == n and gone else 1


def worker_rss(master, key="RssAnon:"):
    """{pid: kB} of the master's children (the workers): RssAnon (private memory), or
    another /proc/<pid>/status line (VmRSS: adds the pages of shared zones the worker
    touched and of mapped files)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) != master:
                continue
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    if line.startswith(key):
                        out[int(pid)] = int(line.split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return out


def cmd_updates(url, n, sample_at, doc_a, doc_b, master, bound):
    """N POSTs alternating DOC_A and DOC_B on one keep-alive connection. Worker memory
    is sampled before, after SAMPLE_AT POSTs and at the end (each time 0.6 s after the
    last POST, so that every worker applied it): RssAnon (private memory, where a leak
    would show; the bound applies to it) and VmRSS (RssAnon + touched pages of the
    shared zones and mapped files)."""
    host, port, path = split_url(url)
    bodies = [open(doc_a, "rb").read(), open(doc_b, "rb").read()]
    conn = http.client.HTTPConnection(host, port, timeout=30)

    def sample():
        time.sleep(0.6)   # every worker applies the latest document (Lua: within 0.25 s)
        return worker_rss(master), worker_rss(master, "VmRSS:")

    before = sample()
    mid = None
    trend = []
    every = max(1, n // 10)
    bad = 0
    start = time.monotonic()
    for i in range(n):
        if i == sample_at:
            mid = sample()
        if i > sample_at and i % every == 0:   # no pause: the trend, for the report
            trend.append((i, worker_rss(master)))
            print("updates: after %d: RssAnon %s" % (i, trend[-1][1]), file=sys.stderr)
        try:
            status, text = post(conn, path, bodies[i % 2])
        except (OSError, http.client.HTTPException) as e:
            status, text = 0, str(e).encode()
            conn = http.client.HTTPConnection(host, port, timeout=30)
        if status != 201:
            bad += 1
            if bad <= 5:
                print("updates: POST %d answered %s: %r" % (i, status, text[:200]), file=sys.stderr)
    elapsed = time.monotonic() - start
    end = sample()
    mid = mid or end
    growth, growth_kb = [], []
    anon, vm = [], []
    for pid in sorted(end[0]):
        m, e = mid[0].get(pid), end[0][pid]
        g = (e - m) / m * 100 if m else float("inf")
        growth.append(g)
        growth_kb.append(e - m if m else float("inf"))
        anon.append("%s/%s/%s" % (before[0].get(pid), m, e))
        vm.append("%s/%s/%s" % (before[1].get(pid), mid[1].get(pid), end[1].get(pid)))
        print("updates: worker %d RssAnon before %s kB, after %d %s kB, after %d %d kB (%+.1f %%); "
              "VmRSS %s / %s / %s kB" % (pid, before[0].get(pid), sample_at, m, n, e, g,
                                         before[1].get(pid), mid[1].get(pid), end[1].get(pid)),
              file=sys.stderr)
    same = sorted(before[0]) == sorted(end[0]) == sorted(mid[0])
    worst = max(growth) if growth else float("inf")
    worst_kb = max(growth_kb) if growth_kb else float("inf")
    seen = [v for _, t in trend for v in t.values()] + list(mid[0].values()) + list(end[0].values())
    print("RESULT posts=%d bad=%d elapsed=%.1f rate=%.0f anon_kB=%s vmrss_kB=%s worst_growth=%.1f "
          "worst_growth_kB=%d range_kB=%d-%d same_workers=%d"
          % (n, bad, elapsed, n / elapsed, ";".join(anon), ";".join(vm), worst, worst_kb,
             min(seen), max(seen), same))
    return 0 if bad == 0 and same and worst_kb <= bound else 1


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "doc":
        churn = [int(p) for p in args[args.index("--churn") + 1].split(",")] if "--churn" in args else None
        write(args[0], base_doc(churn, late="--late" in args))
        return 0
    if cmd == "bigdoc":
        write(args[0], big_doc(args[1]))
        return 0
    if cmd == "churn":
        return cmd_churn(args[0], float(args[1]), float(args[2]), int(args[3]))
    if cmd == "burst":
        return cmd_burst(args[0], int(args[1]), args[2], len(args) > 3 and args[3] == "ewma")
    if cmd == "quit":
        return cmd_quit(args[0], int(args[1]), int(args[2]))
    if cmd == "updates":
        return cmd_updates(args[0], int(args[1]), int(args[2]), args[3], args[4], int(args[5]),
                           float(args[6]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
