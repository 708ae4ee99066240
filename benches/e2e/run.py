#!/usr/bin/env python3
"""End-to-end performance of the gateways against native nginx (`make bench-e2e`).

Three gateways from one template (benches/e2e/gateway.conf), same nginx settings:
  native  nginx's own upstreams (`server` lines, `hash ... consistent`, weights)
  module  the ingress-lb nginx module (ingress_lb, configuration POSTed as JSON)
  lua     the Lua front end (lua/balancer.lua + configuration.lua + libingress_lb.so)
in front of one backend nginx (benches/e2e/backends.conf; every endpoint is a listening
socket 127.0.0.1:28000 and up answering its port), loaded by wrk (benches/e2e/wrk.lua).

Phases (--only, comma-separated; default all):
  throughput  requests/s, p50/p99 latency and the gateway worker's CPU time per request
              for round robin over 3/100/1000 endpoints, chash by $request_uri over 100
              (10 000 distinct URIs), ewma over 100, sticky_balanced over 100 (returning
              sessions), a canary with weight 20. One worker per gateway; runs alternate
              native, module, lua, native, ... for ROUNDS rounds; medians and their ratio
              to native's median are reported.
  apply       module and Lua gateways with 2 workers: a 3000 backends x 10 endpoints
              document POSTed fresh and with one backend added (time to the 201, time
              until every worker serves it); the event-loop time one update costs the
              worker that takes the POST and the other one (no load; the same document /
              one backend changed / every backend changed); then p99 and each worker's
              CPU % under a light steady wrk load while nothing / the same document / a
              document with one backend changed / a document with every backend changed
              is POSTed every second.
  memory      worker VmRSS and RssAnon with no configuration, after 3000 x 10 and after
              20 000 backends (module, Lua; a native worker for reference).

Outputs: benches/e2e/results/results.md (tables + machine description), results.json
(every run), throughput-ratio.png (gnuplot chart); the README block between
<!-- bench-e2e:begin --> and <!-- bench-e2e:end --> is replaced by results.md when every
phase ran in a full (not QUICK) run, or with --readme.

Stops with exit status 1 and a message naming the run when a gateway answers non-2xx,
wrk reports socket errors or timeouts, a POST is not answered 201, a check of what a
gateway does fails (wrong endpoints, no affinity, no canary split), a worker dies or an
error log shows [alert]/[crit]/[emerg]. Every nginx and wrk started is stopped on exit,
on failure and on Ctrl-C.

Usage:  benches/e2e/run.py [--only PHASES] [--rounds N] [--duration S] [--warmup S]
                           [--scenarios NAMES] [--readme | --no-readme]
Env:    LIB (target/release/libingress_lb.so)  MODULE (target/release/ngx_http_ingress_lb_module.so)
        NGINX (/usr/sbin/nginx)  QUICK=1 (1 round, 2 s runs: checks the harness works)
        PIN=0 (no CPU pinning)  E2E_DIR (a new /tmp/e2e-* directory, removed unless KEEP=1)
Ports:  127.0.0.1:27001-27023 (gateways), 127.0.0.1:28000-28999 (backends).
"""
import argparse
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(REPO, "README.md")
BEGIN, END = "<!-- bench-e2e:begin -->", "<!-- bench-e2e:end -->"
NGX_MODULES = "/usr/lib/nginx/modules"
BACKEND_PORT0 = 28000
KINDS = ["native", "module", "lua"]
HZ = os.sysconf("SC_CLK_TCK")

LIB = os.environ.get("LIB") or os.path.join(REPO, "target/release/libingress_lb.so")
MODULE = os.environ.get("MODULE") or os.path.join(REPO, "target/release/ngx_http_ingress_lb_module.so")
NGINX = os.environ.get("NGINX") or "/usr/sbin/nginx"
# nginx reads an exported NGINX variable as inherited listening sockets: never pass it on.
os.environ.pop("NGINX", None)
QUICK = os.environ.get("QUICK", "0") not in ("", "0")
PIN = os.environ.get("PIN", "1") not in ("", "0")

KEEPALIVE = "keepalive 1024; keepalive_requests 1000000; keepalive_timeout 60s;"

# Scenarios of the throughput phase: name, endpoints, what ours get in the backend JSON,
# what native nginx does instead.
SCENARIOS = [
    {"name": "rr3", "eps": 3, "rr": True, "what": "round robin, 3 endpoints"},
    {"name": "rr100", "eps": 100, "rr": True, "what": "round robin, 100 endpoints"},
    {"name": "rr1000", "eps": 1000, "rr": True, "what": "round robin, 1000 endpoints"},
    {"name": "chash100", "eps": 100, "hash": True,
     "what": "chash by $request_uri, 100 endpoints, 10 000 URIs (native: hash $request_uri consistent)"},
    {"name": "ewma100", "eps": 100, "lb": "ewma", "what": "ewma, 100 endpoints (native: round robin)"},
    {"name": "sticky100", "eps": 100, "sticky": True,
     "what": "sticky_balanced cookie, 100 endpoints, requests carrying one of up to 64 affinity "
             "cookies: returning sessions (native: round robin, cookies ignored)"},
    {"name": "canary20", "eps": 10, "canary": 10,
     "what": "primary 10 endpoints + canary 10 endpoints, weight 20 (native: one upstream, "
             "primary servers weight=4, canary servers weight=1)"},
]


class Fail(Exception):
    pass


def log(msg):
    print("bench-e2e [%5.0fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


T0 = time.monotonic()
PARTIAL = {}      # what main() has measured so far (saved when a run fails)

# --- processes ------------------------------------------------------------------------

MASTERS = []      # pid files of every nginx started
WRKS = set()      # running wrk Popen objects


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError):
                pass
    return sorted(out)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return st[st.rindex(")") + 2] != "Z"
    except OSError:
        return False


def cleanup():
    for p in list(WRKS):
        if p.poll() is None:
            p.kill()
            p.wait()
    WRKS.clear()
    pids = []
    for pf in MASTERS:
        try:
            with open(pf) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            continue
        pids.append((pid, children(pid)))
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    for pid, workers in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in [pid] + workers:
            if alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
    MASTERS.clear()


def on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def wait_port(port, what, host="127.0.0.1"):
    for _ in range(200):
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise Fail("%s: nothing listens on %s:%d" % (what, host, port))


class Nginx:
    """An nginx with its own prefix under the work directory."""

    def __init__(self, name, conf, port, workers):
        self.name, self.port = name, port
        self.prefix = os.path.join(WORK, name)
        for d in ("conf", "logs", "tmp"):
            os.makedirs(os.path.join(self.prefix, d), exist_ok=True)
        with open(os.path.join(self.prefix, "conf/nginx.conf"), "w") as f:
            f.write(conf)
        cmd = [NGINX, "-p", self.prefix + "/", "-c", "conf/nginx.conf"]
        t = subprocess.run(cmd + ["-t", "-q"], capture_output=True, text=True)
        if t.returncode != 0:
            raise Fail("%s: nginx -t failed: %s" % (name, t.stderr.strip()))
        self.pidfile = os.path.join(self.prefix, "logs/nginx.pid")
        MASTERS.append(self.pidfile)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise Fail("%s: nginx did not start: %s" % (name, r.stderr.strip()))
        for _ in range(100):
            if os.path.exists(self.pidfile):
                break
            time.sleep(0.05)
        with open(self.pidfile) as f:
            self.master = int(f.read())
        wait_port(port, name)
        for _ in range(200):      # the master forks its workers one after the other
            self.workers = children(self.master)
            if len(self.workers) >= workers:
                break
            time.sleep(0.05)
        if len(self.workers) != workers:
            raise Fail("%s: %d worker processes, expected %d" % (name, len(self.workers), workers))
        # check_log() reads what is logged from now on (a bind() that had to be retried at
        # start-up, logged at [emerg] by nginx, is not a failure once nginx is serving)
        self.log_path = os.path.join(self.prefix, "logs/error.log")
        self.log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0

    def check_workers(self, what):
        now = children(self.master)
        if now != self.workers:
            raise Fail("%s: %s: worker processes changed from %s to %s (a worker died?): see %s/logs/error.log"
                       % (self.name, what, self.workers, now, self.prefix))

    def check_log(self):
        with open(self.log_path, errors="replace") as f:
            f.seek(self.log_offset)
            bad = [l for l in f if re.search(r"\[(alert|crit|emerg)\]|exited on signal|panic", l)]
        if bad:
            raise Fail("%s: error log %s: %s" % (self.name, self.log_path, bad[0].strip()))

    def ticks(self):
        return {p: proc_ticks(p) for p in self.workers}

    def stop(self):
        try:
            os.kill(self.master, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + 5
        while alive(self.master) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in [self.master] + self.workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        if self.pidfile in MASTERS:
            MASTERS.remove(self.pidfile)


def proc_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])      # utime + stime


def loop_ns(pid):
    """CPU time of a worker's main thread (its event loop; compilation threads
    excluded), in ns, from the scheduler's per-thread statistics."""
    with open("/proc/%d/task/%d/schedstat" % (pid, pid)) as f:
        return int(f.read().split()[0])


def cpu_busy_ticks(cpu):
    """Ticks of one CPU spent in processes (user, nice, system) or stolen by the hypervisor;
    interrupts and softirqs (loopback networking of the benchmark itself) left out."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%d " % cpu):
                v = [int(x) for x in line.split()[1:]]
                return v[0] + v[1] + v[2] + v[7]
    return 0


def proc_mem(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0])
    return out


# --- configurations ---------------------------------------------------------------------

def render(template, kind, values):
    """Keep the lines of `kind` ("#@ kinds" sections), fill in @NAME@ placeholders."""
    out, keep = [], True
    with open(os.path.join(HERE, template)) as f:
        for line in f:
            if line.startswith("#@"):
                kinds = line[2:].split()
                keep = "*" in kinds or kind in kinds
                continue
            if keep:
                out.append(line)
    text = "".join(out)
    for k, v in values.items():
        text = text.replace("@%s@" % k, v)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise Fail("%s: unfilled placeholders %s" % (template, sorted(set(left))))
    return text


def affinity(workers):
    return "worker_cpu_affinity %s;" % " ".join(["01"] * workers) if PIN else ""


def port_range(first, n):
    return ["127.0.0.1:%d" % p for p in range(first, first + n)]


def sc_endpoints(sc):
    eps = port_range(BACKEND_PORT0, sc["eps"])
    canary = port_range(BACKEND_PORT0 + sc["eps"], sc.get("canary", 0))
    return eps, canary


def native_upstream(sc):
    eps, canary = sc_endpoints(sc)
    lines = ["    upstream %s {" % sc["name"]]
    if sc.get("hash"):
        lines.append("        hash $request_uri consistent;")
    weight = " weight=4" if canary else ""   # 10 x 4 : 10 x 1 = 80 % : 20 %
    lines += ["        server %s%s;" % (e, weight) for e in eps]
    lines += ["        server %s weight=1;" % e for e in canary]
    lines += ["        " + KEEPALIVE, "    }"]
    return "\n".join(lines)


def balancer_upstream(kind):
    line = "ingress_lb;" if kind == "module" else "balancer_by_lua_block { balancer.balance() }"
    return "\n".join(["    upstream upstream_balancer {",
                      "        server 0.0.0.1;   # placeholder",
                      "        " + line,
                      "        " + KEEPALIVE,
                      "    }"])


def location(kind, path, backend, native_upstream_name=None):
    """A proxied location as nginx.tmpl writes it; `backend` is the text given to
    `set $proxy_upstream_name` (a name, or $http_x_backend)."""
    lines = ["        location %s {" % path,
             '            set $location_path "%s";' % path,
             "            set $balancer_ewma_score -1;",
             '            set $proxy_upstream_name "%s";' % backend,
             '            set $proxy_alternative_upstream_name "";',
             "            add_header X-Worker $pid always;"]
    if kind == "native":
        if native_upstream_name:
            lines.append("            proxy_pass http://%s;" % native_upstream_name)
        else:
            lines.append("            return 404;")
    elif kind == "module":
        lines += ["            ingress_lb_route on;",
                  "            proxy_pass http://upstream_balancer;"]
    else:
        lines += ["            rewrite_by_lua_block { balancer.rewrite() }",
                  "            proxy_pass http://upstream_balancer;",
                  "            log_by_lua_block { balancer.log() }"]
    lines.append("        }")
    return "\n".join(lines)


def gateway_conf(kind, port, workers, scenarios, reuseport):
    if kind == "native":
        upstreams = "\n".join(native_upstream(sc) for sc in scenarios)
    else:
        upstreams = balancer_upstream(kind)
    locs = [location(kind, "/%s/" % sc["name"], sc["name"], sc["name"]) for sc in scenarios]
    locs.append(location(kind, "/by-header/", "$http_x_backend"))
    return render("gateway.conf", kind, {
        "MODULE": MODULE, "LIB": LIB, "NGX_MODULES": NGX_MODULES, "ROOT": REPO,
        "WORKERS": str(workers), "AFFINITY": affinity(workers),
        "PREFIX": os.path.join(WORK, "%s-%d" % (kind, port)), "PORT": str(port),
        "LISTEN_OPTS": " reuseport" if reuseport else "",
        "UPSTREAMS": upstreams, "LOCATIONS": "\n".join(locs)})


def start_gateway(kind, port, workers, scenarios=(), reuseport=False):
    gw = Nginx("%s-%d" % (kind, port), gateway_conf(kind, port, workers, scenarios, reuseport), port, workers)
    gw.kind = kind
    return gw


def start_backends(n):
    listens = "\n".join("        listen %s;" % a for a in port_range(BACKEND_PORT0, n))
    conf = render("backends.conf", "*", {
        "FIRST_PORT": str(BACKEND_PORT0), "WORKERS": "1",
        "AFFINITY": "worker_cpu_affinity 10;" if PIN else "",
        "PREFIX": os.path.join(WORK, "backends"), "LISTENS": listens})
    b = Nginx("backends", conf, BACKEND_PORT0, 1)
    wait_port(BACKEND_PORT0 + n - 1, "backends")
    return b


# Backends JSON as the controller writes it.
def backend(name, endpoints, **extra):
    b = {"name": name, "service": {"metadata": {"name": name}, "spec": {"type": "ClusterIP"}},
         "port": 80, "sslPassthrough": False,
         "endpoints": [{"address": a.rsplit(":", 1)[0], "port": a.rsplit(":", 1)[1]} for a in endpoints],
         "sessionAffinityConfig": {"name": "", "cookieSessionAffinity": {"name": ""}},
         "upstreamHashByConfig": {}, "noServer": False,
         "trafficShapingPolicy": {"weight": 0, "header": "", "headerValue": "", "headerPattern": "",
                                  "cookie": ""}}
    b.update(extra)
    return b


def scenario_backends(sc):
    eps, canary = sc_endpoints(sc)
    name = sc["name"]
    if sc.get("hash"):
        return [backend(name, eps, upstreamHashByConfig={"upstream-hash-by": "$request_uri"})]
    if sc.get("lb"):
        return [backend(name, eps, **{"load-balance": sc["lb"]})]
    if sc.get("sticky"):
        return [backend(name, eps, sessionAffinityConfig={
            "name": "cookie", "mode": "balanced",
            "cookieSessionAffinity": {"name": "route", "locations": {"_": ["/%s/" % name]}}})]
    if canary:
        return [backend(name, eps, alternativeBackends=[name + "-canary"]),
                backend(name + "-canary", canary, noServer=True, trafficShapingPolicy={
                    "weight": 20, "weightTotal": 100, "header": "", "headerValue": "",
                    "headerPattern": "", "cookie": ""})]
    return [backend(name, eps)]


def big_backend_json(b, eps, port):
    """Backend b of the controller's 3000 x 10 document (as benches/apply.rs writes it)."""
    return json.dumps(backend("ns-svc-%d-80" % b, ["10.%d.%d.%d:%d" % (b // 250, b % 250, i + 1, port)
                                                   for i in range(eps)]), separators=(",", ":"))


def join_doc(parts):
    return ("[" + ",".join(parts) + "]").encode()


# --- HTTP -----------------------------------------------------------------------------

def request(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read(), r
    finally:
        c.close()


def post_answered(gw, doc, what):
    """POST the backends document: the seconds to the 201 and the response (Fail on
    any other status)."""
    t = time.monotonic()
    status, body, r = request(gw.port, "POST", "/configuration/backends", doc)
    dt = time.monotonic() - t
    if status != 201:
        raise Fail("%s: POST /configuration/backends (%s, %d bytes) answered %d: %s"
                   % (gw.name, what, len(doc), status, body[:300].decode(errors="replace")))
    return dt, r


def post(gw, doc, what):
    return post_answered(gw, doc, what)[0]


def post_to(gw, doc, what):
    """post(), returning the pid of the worker that answered (X-Worker)."""
    return int(post_answered(gw, doc, what)[1].getheader("X-Worker") or 0)


# seconds after a POST before the workers' event-loop time is read again: every worker
# has synced (module: 100 ms zone timer; Lua: 0.25 s timer) and any compilation ended
UPDATE_SETTLE = 0.7


def update_cost(gw, docs, n, what):
    """Event-loop time one update costs the worker that takes the POST and each other
    worker, with no load: main-thread CPU time around each of n POSTs (docs(k)), minus
    the idle rate of the same worker (its timers) over the same time. Medians, ms."""
    t0, l0 = time.monotonic(), {p: loop_ns(p) for p in gw.workers}
    time.sleep(2.0)
    t1, l1 = time.monotonic(), {p: loop_ns(p) for p in gw.workers}
    idle = {p: (l1[p] - l0[p]) / (t1 - t0) for p in gw.workers}   # ns per second
    recv, other = [], []
    for k in range(n):
        doc = docs(k)
        b, tb = {p: loop_ns(p) for p in gw.workers}, time.monotonic()
        pid = post_to(gw, doc, what)
        time.sleep(UPDATE_SETTLE)
        a, ta = {p: loop_ns(p) for p in gw.workers}, time.monotonic()
        if pid not in a:
            raise Fail("%s: %s: POST answered by pid %s, not a worker of this gateway" % (gw.name, what, pid))
        for p in gw.workers:
            ms = max(0.0, (a[p] - b[p] - idle[p] * (ta - tb)) / 1e6)
            (recv if p == pid else other).append(ms)
    gw.check_workers(what)
    return {"recv_ms": statistics.median(recv), "other_ms": statistics.median(other) if other else None,
            "recv_all": recv, "other_all": other, "n": n}


def probe_until_served(gw, backend_name, t0, timeout=20.0):
    """New connections to /by-header/ with X-Backend until every worker answered 200;
    returns seconds from t0 to the last worker's first 200."""
    first = {}
    deadline = time.monotonic() + timeout
    while len(first) < len(gw.workers):
        if time.monotonic() > deadline:
            raise Fail("%s: backend %s not served by every worker within %.0f s (served by %s of %s)"
                       % (gw.name, backend_name, timeout, sorted(first), gw.workers))
        status, _, r = request(gw.port, "GET", "/by-header/", headers={"X-Backend": backend_name}, timeout=10)
        pid = int(r.getheader("X-Worker") or 0)
        if status == 200 and pid not in first:
            first[pid] = time.monotonic() - t0
        elif status not in (200, 503):
            raise Fail("%s: probe of %s answered %d" % (gw.name, backend_name, status))
    return max(first.values())


class Client:
    """One keep-alive connection for the functional checks."""

    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path, headers=None):
        self.c.request("GET", path, headers=headers or {})
        r = self.c.getresponse()
        return r.status, r.read().decode(errors="replace"), r

    def close(self):
        self.c.close()


# --- wrk ------------------------------------------------------------------------------

def wrk(port, path, seconds, conns, what, env=None, check=True):
    """One wrk run; returns its RESULT fields. Fails on errors when check."""
    cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "2s", "--latency",
           "-s", os.path.join(HERE, "wrk.lua"), "http://127.0.0.1:%d%s" % (port, path)]
    if PIN:
        cmd = ["taskset", "-c", "1"] + cmd
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e)
    WRKS.add(p)
    try:
        out, _ = p.communicate(timeout=seconds + 30)
    finally:
        WRKS.discard(p)
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if p.returncode != 0 or not m:
        raise Fail("%s: wrk failed (exit %s): %s" % (what, p.returncode, out.strip()[-500:]))
    r = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    bad = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
    if check and (bad or r["requests"] == 0):
        raise Fail("%s: wrk reported %d non-2xx responses (status >= 400), socket errors connect %d read %d "
                   "write %d timeout %d, %d requests" % (what, r["status"], r["connect"], r["read"],
                                                         r["write"], r["timeout"], r["requests"]))
    return r


# --- phase 1: throughput ------------------------------------------------------------------

def check_scenario(gw, sc, cookies_out=None):
    """What the gateway does for the scenario is what it should do."""
    eps, canary = sc_endpoints(sc)
    ports = {e.rsplit(":", 1)[1] for e in eps}
    cports = {e.rsplit(":", 1)[1] for e in canary}
    path = "/%s/" % sc["name"]
    c = Client(gw.port)
    what = "%s %s check" % (gw.kind, sc["name"])
    seen, cookies = [], []
    try:
        n = 400 if canary else min(2 * sc["eps"], 200)
        for i in range(n):
            status, body, r = c.get(path + ("u%d" % i if sc.get("hash") else ""))
            if status != 200 or body not in ports | cports:
                raise Fail("%s: GET %s answered %d %r (expected 200 and one of the scenario's endpoint ports)"
                           % (what, path, status, body[:100]))
            seen.append(body)
            sc_cookie = r.getheader("Set-Cookie")
            if sc_cookie and sc_cookie.startswith("route="):
                cookies.append(sc_cookie.split(";")[0])
        distinct = len(set(seen))
        if distinct < min(len(ports), n) // 2:
            raise Fail("%s: %d requests reached only %d distinct endpoints of %d" % (what, n, distinct, len(ports)))
        if canary:
            share = sum(1 for s in seen if s in cports) / n
            if not 0.12 <= share <= 0.28:
                raise Fail("%s: %.0f %% of %d requests went to the canary, expected ~20 %%" % (what, 100 * share, n))
        if sc.get("hash"):
            for i in range(10):
                a = c.get(path + "same%d" % i)[1]
                b = c.get(path + "same%d" % i)[1]
                if a != b:
                    raise Fail("%s: the same URI went to %s then %s" % (what, a, b))
        if sc.get("sticky") and gw.kind != "native":
            if len(set(cookies)) < 8:
                raise Fail("%s: %d responses without a cookie set only %d distinct route cookies"
                           % (what, n, len(set(cookies))))
            for ck in cookies[:10]:
                got = {c.get(path, {"Cookie": ck})[1] for _ in range(5)}
                if len(got) != 1:
                    raise Fail("%s: requests with cookie %s reached %s" % (what, ck, sorted(got)))
            if cookies_out is not None:
                cookies_out.extend(sorted(set(cookies))[:64])
    finally:
        c.close()


def phase_throughput(args, out):
    scenarios = [sc for sc in SCENARIOS if not args.scenarios or sc["name"] in args.scenarios]
    if not scenarios:
        raise Fail("--scenarios: no scenario named %s" % args.scenarios)
    port = {"native": 27001, "module": 27002, "lua": 27003}
    gws = {k: start_gateway(k, port[k], 1, scenarios) for k in KINDS}
    doc = json.dumps([b for sc in scenarios for b in scenario_backends(sc)]).encode()
    for k in ("module", "lua"):
        post(gws[k], doc, "the scenarios' backends")
    for k in ("module", "lua"):   # Lua workers apply a POSTed document within 0.25 s
        probe_until_served(gws[k], scenarios[0]["name"], time.monotonic())
    cookie_file = os.path.join(WORK, "cookies-%s.txt")
    for sc in scenarios:
        for k in KINDS:
            cookies = []
            check_scenario(gws[k], sc, cookies)
            if sc.get("sticky") and k != "native":
                with open(cookie_file % k, "w") as f:
                    f.write("\n".join(cookies) + "\n")
        if sc.get("sticky"):
            shutil.copy(cookie_file % "module", cookie_file % "native")
    log("throughput: every gateway passed its checks; %d scenarios x %d gateways x %d rounds of %d s (+%d s warm-up)"
        % (len(scenarios), len(KINDS), args.rounds, args.duration, args.warmup))
    runs = []
    out["throughput"] = {"runs": runs, "scenarios": [sc["name"] for sc in scenarios]}
    for rnd in range(1, args.rounds + 1):
        for sc in scenarios:
            for k in KINDS:
                gw = gws[k]
                env = {}
                path = "/%s/" % sc["name"]
                if sc.get("hash"):
                    env["E2E_WRK_URIS"] = "10000"
                if sc.get("sticky"):
                    env["E2E_WRK_COOKIES"] = cookie_file % k
                what = "throughput %s / %s, round %d" % (sc["name"], k, rnd)
                if args.warmup:
                    wrk(gw.port, path, args.warmup, args.conns, what + " (warm-up)", env)
                t0, c0 = gw.ticks(), cpu_busy_ticks(0)
                r = wrk(gw.port, path, args.duration, args.conns, what, env)
                t1, c1 = gw.ticks(), cpu_busy_ticks(0)
                gw.check_workers(what)
                cpu = sum(t1[p] - t0[p] for p in t1) / HZ
                # CPU 0 is the gateway worker's when pinned: what else ran there
                r["cpu0_others_pct"] = max(0.0, 100 * ((c1 - c0) / HZ - cpu) / (r["duration_us"] / 1e6)) if PIN else None
                r.update(scenario=sc["name"], gateway=k, round=rnd, cpu_s=cpu,
                         cpu_us_per_req=cpu / r["requests"] * 1e6,
                         busy_pct=100 * cpu / (r["duration_us"] / 1e6))
                runs.append(r)
                log("%-40s %8.0f req/s  p50 %6.0f us  p99 %6.0f us  cpu %5.1f us/req"
                    % (what, r["rps"], r["p50_us"], r["p99_us"], r["cpu_us_per_req"]))
    for gw in gws.values():
        gw.check_log()
        gw.stop()


def summarize_throughput(data):
    runs = data["runs"]
    rows = []
    for name in data["scenarios"]:
        med = {}
        for k in KINDS:
            rs = [r for r in runs if r["scenario"] == name and r["gateway"] == k]
            med[k] = {f: statistics.median(r[f] for r in rs)
                      for f in ("rps", "p50_us", "p99_us", "cpu_us_per_req", "busy_pct")}
            med[k]["n"] = len(rs)
            # ratio of each run to the native run of the same round (adjacent in time)
            nat = {r["round"]: r for r in runs if r["scenario"] == name and r["gateway"] == "native"}
            med[k]["round_ratios"] = [r["rps"] / nat[r["round"]]["rps"] for r in rs if r["round"] in nat]
        for k in KINDS:
            m, n = med[k], med["native"]
            row = dict(scenario=name, gateway=k,
                       **{f: m[f] for f in ("rps", "p50_us", "p99_us", "cpu_us_per_req", "busy_pct")})
            row["ratio"] = m["rps"] / n["rps"]
            row["p99_ratio"] = m["p99_us"] / n["p99_us"]
            row["cpu_ratio"] = m["cpu_us_per_req"] / n["cpu_us_per_req"]
            row["ratio_range"] = (min(m["round_ratios"]), max(m["round_ratios"]))
            row["rounds"] = m["n"]
            is_rr = name in ("rr3", "rr100", "rr1000")
            if k == "native" or not is_rr:
                row["rps_target"] = row["p99_target"] = None
            else:
                need = 0.99 if k == "module" else 0.97
                row["rps_target"] = (need, row["ratio"] >= need)
                row["p99_target"] = (1.10, row["p99_ratio"] <= 1.10)
            rows.append(row)
    return rows


# --- phase 2: apply and churn ------------------------------------------------------------

class BigDoc:
    """The controller's 3000 x 10 document plus live backends; backends can be toggled
    between ports 8080 and 8081 one at a time or all at once."""

    def __init__(self, n, eps, live):
        self.n, self.eps, self.live = n, eps, live
        self.port = [8080] * n
        self.parts = [big_backend_json(b, eps, 8080) for b in range(n)]
        self.extra = []

    def doc(self):
        return join_doc(self.parts + [json.dumps(b) for b in self.live + self.extra])

    def toggle(self, b):
        self.port[b] = 8081 if self.port[b] == 8080 else 8080
        self.parts[b] = big_backend_json(b, self.eps, self.port[b])

    def all_variant(self, port):
        return join_doc([big_backend_json(b, self.eps, port) for b in range(self.n)]
                        + [json.dumps(b) for b in self.live + self.extra])


def churn_run(gw, case, docs, args, what):
    """wrk's light steady load on /load/ while `docs()` is POSTed every second."""
    stop = threading.Event()
    posts, errors = [], []

    def poster():
        k = 0
        nxt = time.monotonic() + 0.5
        while not stop.is_set():
            if stop.wait(max(0.0, nxt - time.monotonic())):
                break
            nxt += 1.0
            try:
                posts.append(post(gw, docs(k), case))
            except Exception as e:   # reported after the run
                errors.append(str(e))
                return
            k += 1

    env = {"E2E_WRK_DELAY_MS": str(args.churn_delay_ms)}
    wrk(gw.port, "/load/", 1, args.churn_conns, what + " (warm-up)", env)
    th = None
    if docs:
        th = threading.Thread(target=poster, daemon=True)
    t0, w0 = gw.ticks(), time.monotonic()
    l0 = {p: loop_ns(p) for p in gw.workers}
    if th:
        th.start()
    try:
        r = wrk(gw.port, "/load/", args.churn_duration, args.churn_conns, what, env)
    finally:
        stop.set()
        if th:
            th.join()
    t1, w1 = gw.ticks(), time.monotonic()
    l1 = {p: loop_ns(p) for p in gw.workers}
    if errors:
        raise Fail("%s: %s" % (what, errors[0]))
    gw.check_workers(what)
    r["cpu_pct"] = [100.0 * (t1[p] - t0[p]) / HZ / (w1 - w0) for p in gw.workers]
    # event-loop CPU per second of the run, per worker (ms/s)
    r["loop_ms_per_s"] = [(l1[p] - l0[p]) / 1e6 / (w1 - w0) for p in gw.workers]
    r["posts"] = len(posts)
    r["post_ms"] = statistics.median(posts) * 1e3 if posts else None
    return r


def phase_apply(args, out):
    # the live backend of the load runs: location /load/ sets $proxy_upstream_name "load"
    load_sc = [{"name": "load", "eps": 10}]
    live = [backend("load", port_range(BACKEND_PORT0, 10))]
    bd = BigDoc(3000, 10, live)
    base = bd.doc()
    port = {"module": 27012, "lua": 27013}
    res = {"doc_bytes": len(base), "apply": {}, "churn": []}
    out["apply"] = res
    gws = {k: start_gateway(k, port[k], 2, load_sc, reuseport=True) for k in ("module", "lua")}
    for k, gw in gws.items():
        t0 = time.monotonic()
        t201 = post(gw, base, "3000 x 10, fresh")
        tall = probe_until_served(gw, "load", t0)
        added = []
        for i in range(3):
            bd.extra = [backend("e2e-probe-%d" % i, port_range(BACKEND_PORT0, 2))]
            d = bd.doc()
            t0 = time.monotonic()
            a201 = post(gw, d, "3000 x 10 + one new backend")
            added.append((a201, probe_until_served(gw, "e2e-probe-%d" % i, t0)))
        bd.extra = []
        post(gw, base, "3000 x 10")
        res["apply"][k] = {"fresh_201_s": t201, "fresh_all_s": tall,
                           "added_201_s": statistics.median(a for a, _ in added),
                           "added_all_s": statistics.median(b for _, b in added)}
        log("apply %s: fresh 3000x10: 201 after %.0f ms, every worker after %.0f ms; one backend added: "
            "%.1f / %.1f ms" % (k, t201 * 1e3, tall * 1e3, res["apply"][k]["added_201_s"] * 1e3,
                                res["apply"][k]["added_all_s"] * 1e3))
    time.sleep(0.5)

    variants = {8080: base, 8081: bd.all_variant(8081)}

    def one_changed(k):
        bd.toggle(k % bd.n)
        return bd.doc()

    cases = [("idle", None), ("unchanged", lambda k: base), ("one backend changed", one_changed),
             ("every backend changed", lambda k: variants[8081 if k % 2 == 0 else 8080])]

    # the event-loop cost of one update, measured without load (precise to ~0.1 ms)
    res["update_cost"] = []
    n_updates = 3 if QUICK else 9
    for case, docs in cases[1:]:
        for k, gw in gws.items():
            what = "update cost %s / %s" % (case, k)
            r = update_cost(gw, docs, n_updates, what)
            for b in range(bd.n):
                if bd.port[b] != 8080:
                    bd.toggle(b)
            post(gw, base, "back to the base document")
            r.update(case=case, gateway=k)
            res["update_cost"].append(r)
            log("%-48s receiving worker %5.2f ms, other worker %5.2f ms (medians of %d)"
                % (what, r["recv_ms"], r["other_ms"] or 0.0, n_updates))
    for rnd in range(1, args.churn_rounds + 1):
        for case, docs in cases:
            for k, gw in gws.items():
                what = "churn %s / %s, round %d" % (case, k, rnd)
                r = churn_run(gw, case, docs, args, what)
                # back to the base document, every backend on 8080
                for b in range(bd.n):
                    if bd.port[b] != 8080:
                        bd.toggle(b)
                post(gw, base, "back to the base document")
                r.update(case=case, gateway=k, round=rnd)
                res["churn"].append(r)
                log("%-48s %6.0f req/s  p50 %5.0f us  p99 %6.0f us  posts %d (median %s ms)  worker CPU %s"
                    % (what, r["rps"], r["p50_us"], r["p99_us"], r["posts"],
                       "%.0f" % r["post_ms"] if r["post_ms"] else "-",
                       " / ".join("%.1f %%" % c for c in r["cpu_pct"])))
    for gw in gws.values():
        gw.check_log()
        gw.stop()


# --- phase 3: memory ---------------------------------------------------------------------

def phase_memory(args, out):
    port = {"native": 27021, "module": 27022, "lua": 27023}
    load_sc = [{"name": "load", "eps": 10}]
    gws = {k: start_gateway(k, port[k], 2, load_sc, reuseport=True) for k in KINDS}
    live = [backend("load", port_range(BACKEND_PORT0, 10))]
    big = join_doc([big_backend_json(b, 10, 8080) for b in range(3000)] + [json.dumps(live[0])])
    # 20 000 backends of two endpoints each, as the controller writes them
    huge = join_doc([json.dumps(backend("ns-%d-svc-80" % i, ["10.1.%d.%d:8080" % (i >> 8, i & 255),
                                                           "10.2.%d.%d:8080" % (i >> 8, i & 255)]),
                                separators=(",", ":")) for i in range(20000)]
                    + [json.dumps(backend("load2", port_range(BACKEND_PORT0, 10)))])
    res = {"docs": {"3000x10": len(big), "20000": len(huge)}, "workers": {}}
    out["memory"] = res

    def warm(gw, backend_name):
        # requests on new connections so every worker serves some
        for _ in range(40):
            request(gw.port, "GET", "/load/", headers={"X-Backend": backend_name})

    def sample(state):
        time.sleep(1.0)
        for k, gw in gws.items():
            res["workers"].setdefault(k, {})[state] = [proc_mem(p) for p in gw.workers]

    for gw in gws.values():
        warm(gw, "load")
    sample("no configuration")
    for k in ("module", "lua"):
        t0 = time.monotonic()
        post(gws[k], big, "3000 x 10")
        probe_until_served(gws[k], "load", t0)
        for _ in range(40):
            request(gws[k].port, "GET", "/load/")
    sample("3000 x 10")
    for k in ("module", "lua"):
        t0 = time.monotonic()
        post(gws[k], huge, "20 000 backends")
        probe_until_served(gws[k], "load2", t0, timeout=60)
    sample("20 000 backends")
    # back to the 3000 x 10 document: what a worker gives back
    for k in ("module", "lua"):
        t0 = time.monotonic()
        post(gws[k], big, "3000 x 10 again")
        probe_until_served(gws[k], "load", t0, timeout=60)
    sample("3000 x 10 again")
    for k, st in res["workers"].items():
        for state, ws in st.items():
            log("memory %-6s %-17s %s" % (k, state, "; ".join("VmRSS %d kB RssAnon %d kB" % (w["VmRSS"], w["RssAnon"])
                                                               for w in ws)))
    for gw in gws.values():
        gw.check_workers("memory")
        gw.check_log()
        gw.stop()


# --- report ----------------------------------------------------------------------------

def machine(args):
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ngx = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    try:
        wrkv = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    except (OSError, IndexError):
        wrkv = "?"
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "nginx": ngx, "wrk": wrkv,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg": open("/proc/loadavg").read().split()[:3]}


def pinning_text():
    if not PIN:
        return "none (PIN=0)"
    return ("gateway workers on CPU 0 (`worker_cpu_affinity 01`); backend nginx (1 worker, "
            "`worker_cpu_affinity 10`), wrk (`taskset -c 1`) and this harness on CPU 1")


def fmt_us(us):
    return "%.2f ms" % (us / 1000) if us >= 1000 else "%.0f µs" % us


def pf(t):
    return "–" if t is None else ("pass" if t[1] else "**miss**")


def report(args, out, command, png):
    m = out["machine"]
    L = []
    L.append("Written by `make bench-e2e` (`benches/e2e/run.py`, about 10 minutes; `QUICK=1` for a "
             "1-round check of the harness, `E2E_ARGS=\"--only throughput\"` for one phase).")
    L.append("")
    L.append("Measured %s with `%s`: %s CPUs (%s), kernel %s, nginx %s, wrk %s; load average at the start %s."
             % (m["date"], command, m["nproc"], m["cpu"], m["kernel"], m["nginx"], m["wrk"], " ".join(m["loadavg"])))
    L.append("Pinning: %s. Gateways: one template (`benches/e2e/gateway.conf`), identical settings: "
             "`access_log off`, keep-alive to clients and to upstreams (`keepalive 1024`, "
             "`keepalive_requests 1000000`, HTTP/1.1), nginx.tmpl's per-location `set` lines in all three. "
             "Backends: one nginx, an endpoint = a listening socket (127.0.0.1:28000 and up) answering "
             "`return 200 \"$server_port\"`." % pinning_text())
    if "throughput" in out:
        t = out["throughput"]
        rows = summarize_throughput(t)
        L.append("")
        L.append("**Throughput** — %d rounds, each running native, module, lua in turn per scenario; "
                 "each run `wrk -t1 -c%d -d%ds` after a %d s warm-up, 1 gateway worker. Medians over the rounds; "
                 "ratio = median / native's median (in brackets: the range of per-round ratios). "
                 "CPU/req = the gateway worker's utime+stime over the run / requests; worker busy = that CPU time / "
                 "the run's length (well below 100 %%: the worker shared CPU 0 with other processes and the "
                 "loopback softirqs, or waited for the other side; req/s then says less than CPU/req). Targets (round robin rows): "
                 "requests/s ratio ≥ 0.99 (module), ≥ 0.97 (Lua); p99 ≤ 1.10 × native's."
                 % (args.rounds, args.conns, args.duration, args.warmup))
        L.append("")
        L.append("| scenario | gateway | req/s | ratio | p50 | p99 | p99 ratio | CPU/req | CPU ratio | worker busy "
                 "| req/s target | p99 target |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        for r in rows:
            L.append("| %s | %s | %.0f | %s | %s | %s | %s | %.1f µs | %s | %.0f %% | %s | %s |" % (
                r["scenario"], r["gateway"], r["rps"],
                "1" if r["gateway"] == "native" else "%.3f (%.2f–%.2f)" % ((r["ratio"],) + r["ratio_range"]),
                fmt_us(r["p50_us"]), fmt_us(r["p99_us"]),
                "1" if r["gateway"] == "native" else "%.2f" % r["p99_ratio"],
                r["cpu_us_per_req"], "1" if r["gateway"] == "native" else "%.2f" % r["cpu_ratio"],
                r["busy_pct"], pf(r["rps_target"]), pf(r["p99_target"])))
        others = [r["cpu0_others_pct"] for r in t["runs"] if r.get("cpu0_others_pct") is not None]
        if others:
            L.append("")
            L.append("Other processes on the gateway's CPU 0 during the runs (CPU 0 user + system + steal time "
                     "minus the gateway worker's, from /proc/stat): median %.0f %%, max %.0f %% of the CPU%s."
                     % (statistics.median(others), max(others),
                        "" if statistics.median(others) < 10 else
                        " — the machine was not quiet: requests/s and latency are disturbed, CPU/req less so"))
        L.append("")
        L.append("Scenarios: " + "; ".join("`%s` %s" % (sc["name"], sc["what"]) for sc in SCENARIOS
                                            if sc["name"] in t["scenarios"]) + ".")
        if png:
            L.append("")
            L.append("![requests/s relative to native nginx](benches/e2e/results/throughput-ratio.png)")
    if "apply" in out:
        a = out["apply"]
        L.append("")
        L.append("**Applying a configuration** — 2 workers per gateway (both on CPU 0 when pinned, `reuseport`), "
                 "the controller's 3000 backends × 10 endpoints (%.1f MB). \"every worker\" = from the start of "
                 "the POST until each worker pid has answered 200 for a backend that only the new document has "
                 "(requests on new connections, `X-Worker: $pid`). One backend added: median of 3." % (a["doc_bytes"] / 1e6))
        L.append("")
        L.append("| gateway | fresh: 201 | fresh: every worker | one backend added: 201 | one backend added: every worker |")
        L.append("| --- | ---: | ---: | ---: | ---: |")
        for k, v in a["apply"].items():
            L.append("| %s | %.0f ms | %.0f ms | %.1f ms | %.1f ms |" % (
                k, v["fresh_201_s"] * 1e3, v["fresh_all_s"] * 1e3, v["added_201_s"] * 1e3, v["added_all_s"] * 1e3))
        L.append("")
        L.append("**Configuration churn under load** — `wrk -t1 -c%d -d%ds` with %d ms between a connection's "
                 "requests (a steady ~%d req/s, far from saturation, so worker CPU shows the configuration's "
                 "cost) on a 10-endpoint backend of the 3000 × 10 document, while a document is POSTed every "
                 "second; %d round(s), medians. Target: p99 ≤ 1.10 × the idle p99."
                 % (args.churn_conns, args.churn_duration, args.churn_delay_ms,
                    args.churn_conns * 1000 // (args.churn_delay_ms + 1), args.churn_rounds))
        L.append("")
        L.append("Worker CPU % includes the compilation threads.")
        L.append("")
        L.append("| gateway | POSTed every second | req/s | p50 | p99 | p99 / idle p99 | worker CPU % | POST time | target |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |")
        cases = []
        for r in a["churn"]:
            if r["case"] not in cases:
                cases.append(r["case"])
        for k in ("module", "lua"):
            idle = None
            for case in cases:
                rs = [r for r in a["churn"] if r["case"] == case and r["gateway"] == k]
                if not rs:
                    continue
                p99 = statistics.median(r["p99_us"] for r in rs)
                p50 = statistics.median(r["p50_us"] for r in rs)
                rps = statistics.median(r["rps"] for r in rs)
                cpu = [statistics.median(r["cpu_pct"][i] for r in rs) for i in range(len(rs[0]["cpu_pct"]))]
                pm = [r["post_ms"] for r in rs if r["post_ms"]]
                if case == "idle":
                    idle = p99
                ratio = p99 / idle if idle else None
                target = "–" if case == "idle" or ratio is None else ("pass" if ratio <= 1.10 else "**miss**")
                L.append("| %s | %s | %.0f | %s | %s | %s | %s | %s | %s |" % (
                    k, "nothing (idle)" if case == "idle" else case, rps, fmt_us(p50), fmt_us(p99),
                    "1" if case == "idle" else ("%.2f" % ratio if ratio else "–"),
                    " / ".join("%.1f" % c for c in cpu),
                    "%.0f ms" % statistics.median(pm) if pm else "–", target))
        if a.get("update_cost"):
            L.append("")
            L.append("**Event loop per update** — the same documents POSTed %d times to a gateway without load, "
                     "%.1f s apart: each worker's main-thread CPU time (`/proc/<pid>/task/<pid>/schedstat`, "
                     "compilation threads excluded) around a POST, minus that worker's idle rate (its timers) "
                     "over the same time. The worker that took the POST (`X-Worker`) reads the body, applies "
                     "and stores it; the other worker reads the stored document and applies it. Medians, ms. "
                     "Target: ≤ 5 ms for each worker."
                     % (a["update_cost"][0]["n"], UPDATE_SETTLE))
            L.append("")
            L.append("| gateway | update | worker that took the POST | other worker | target |")
            L.append("| --- | --- | ---: | ---: | --- |")
            for k in ("module", "lua"):
                for r in a["update_cost"]:
                    if r["gateway"] != k:
                        continue
                    worst = max(r["recv_ms"], r["other_ms"] or 0.0)
                    L.append("| %s | %s | %.2f | %s | %s |" % (
                        k, r["case"], r["recv_ms"], "%.2f" % r["other_ms"] if r["other_ms"] is not None else "–",
                        "pass" if worst <= 5.0 else "**miss**"))
    if "memory" in out:
        mm = out["memory"]
        L.append("")
        L.append("**Worker memory** — 2 workers per gateway, `/proc/<pid>/status` 1 s after every worker served "
                 "the document (3000 × 10: %.1f MB; 20 000 backends × 2 endpoints: %.1f MB). VmRSS includes "
                 "shared pages touched (the Lua shared dict, the module's zone); RssAnon is the worker's "
                 "private memory. Per worker, MiB." % (mm["docs"]["3000x10"] / 1e6, mm["docs"]["20000"] / 1e6))
        L.append("")
        L.append("| gateway | state | VmRSS | RssAnon | RssAnon − no configuration |")
        L.append("| --- | --- | --- | --- | --- |")
        for k in KINDS:
            st = mm["workers"].get(k)
            if not st:
                continue
            base = st["no configuration"]
            for state, ws in st.items():
                if k == "native" and state != "no configuration":
                    continue
                L.append("| %s | %s | %s | %s | %s |" % (
                    k, state if k != "native" else "native nginx, one upstream of 10 servers (reference)",
                    " / ".join("%.1f" % (w["VmRSS"] / 1024) for w in ws),
                    " / ".join("%.1f" % (w["RssAnon"] / 1024) for w in ws),
                    " / ".join("%+.1f" % ((w["RssAnon"] - b["RssAnon"]) / 1024) for w, b in zip(ws, base))))
    L.append("")
    L.append("Raw runs: `benches/e2e/results/results.json`.")
    return "\n".join(L) + "\n"


def chart(out):
    """requests/s ratio to native, per scenario and gateway (gnuplot, PNG)."""
    if "throughput" not in out:
        return None
    if not shutil.which("gnuplot"):
        log("gnuplot not found (scripts/setup.sh installs gnuplot-nox): no chart")
        return None
    rows = summarize_throughput(out["throughput"])
    dat = os.path.join(RESULTS, "throughput-ratio.dat")
    with open(dat, "w") as f:
        f.write("# scenario module lua\n")
        for name in out["throughput"]["scenarios"]:
            r = {x["gateway"]: x["ratio"] for x in rows if x["scenario"] == name}
            f.write("%s %.4f %.4f\n" % (name, r["module"], r["lua"]))
    png = os.path.join(RESULTS, "throughput-ratio.png")
    lo = min(min(x["ratio"] for x in rows), 0.9)
    script = """
set terminal pngcairo size 900,450 font "sans,11" background rgb "white"
set output "%s"
set title "requests/s relative to native nginx (median of rounds; 1 = native)"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [%.2f:*]
set grid ytics
set key top right
set ylabel "ratio to native"
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb "black" dt 2
plot "%s" using 2:xtic(1) title "module" lc rgb "#1f77b4", "" using 3 title "Lua" lc rgb "#ff7f0e"
""" % (png, max(0.0, lo - 0.1), dat)
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail("gnuplot failed: %s" % r.stderr.strip())
    return png


def write_readme(md):
    with open(README) as f:
        text = f.read()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise Fail("README.md: expected one %s ... %s block" % (BEGIN, END))
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    with open(README, "w") as f:
        f.write(text[:a] + "\n" + md + text[b:])


# --- main ------------------------------------------------------------------------------

def main():
    global WORK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="throughput,apply,memory", help="phases: throughput,apply,memory")
    ap.add_argument("--rounds", type=int, default=1 if QUICK else 4)
    ap.add_argument("--duration", type=int, default=2 if QUICK else 4, help="seconds per measured run")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--conns", type=int, default=32, help="wrk connections (throughput)")
    ap.add_argument("--scenarios", default="", help="comma-separated subset of %s" % ",".join(s["name"] for s in SCENARIOS))
    ap.add_argument("--churn-duration", type=int, default=3 if QUICK else 6)
    ap.add_argument("--churn-rounds", type=int, default=1 if QUICK else 2)
    ap.add_argument("--churn-conns", type=int, default=16)
    ap.add_argument("--churn-delay-ms", type=int, default=10)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--readme", action="store_true", default=None, help="write the README block")
    g.add_argument("--no-readme", dest="readme", action="store_false")
    ap.add_argument("--report-only", action="store_true",
                    help="no runs: remake results.md, the chart (and with --readme the README block) from results.json")
    args = ap.parse_args()
    if args.report_only:
        with open(os.path.join(RESULTS, "results.json")) as f:
            out = json.load(f)
        saved = argparse.Namespace(**out["args"])
        md = report(saved, out, out["command"], chart(out))
        with open(os.path.join(RESULTS, "results.md"), "w") as f:
            f.write(md.replace("](benches/e2e/results/", "]("))   # paths relative to results/
        print(md)
        if args.readme:
            write_readme(md)
        return
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    phases = [p for p in args.only.replace(" ", ",").split(",") if p]
    for p in phases:
        if p not in ("throughput", "apply", "memory"):
            ap.error("unknown phase %r" % p)
    for f, what in ((NGINX, "NGINX"), (LIB, "LIB (make build)"), (MODULE, "MODULE (make build)"),
                    (os.path.join(NGX_MODULES, "ngx_http_lua_module.so"), "libnginx-mod-http-lua")):
        if not os.path.exists(f):
            raise Fail("%s is missing: %s" % (f, what))
    if not shutil.which("wrk"):
        raise Fail("wrk is missing (apt-get install wrk)")
    if PIN and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        os.sched_setaffinity(0, {1})      # this harness, wrk, the backends: CPU 1
    else:
        globals()["PIN"] = False
    WORK = os.environ.get("E2E_DIR") or tempfile.mkdtemp(prefix="e2e-", dir="/tmp")
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    if os.environ.get("MAKELEVEL"):
        command = "make bench-e2e" + (" QUICK=1" if QUICK else "")
        if sys.argv[1:]:
            command += " E2E_ARGS=%s" % shlex.quote(" ".join(sys.argv[1:]))
    else:
        command = " ".join(shlex.quote(a) for a in ["benches/e2e/run.py"] + sys.argv[1:])
        env = ["%s=%s" % (k, shlex.quote(os.environ[k])) for k in ("QUICK", "PIN", "LIB", "MODULE")
               if os.environ.get(k)]
        if NGINX != "/usr/sbin/nginx":
            env.append("NGINX=" + shlex.quote(NGINX))
        command = " ".join(env + [command])
    out = PARTIAL
    out.update({"machine": machine(args), "command": command, "args": vars(args), "quick": QUICK,
           "lib": LIB, "module": MODULE, "pinning": pinning_text()})
    log("work directory %s; LIB=%s MODULE=%s NGINX=%s; phases %s%s"
        % (WORK, LIB, MODULE, NGINX, ",".join(phases), " (QUICK)" if QUICK else ""))
    backends = None
    try:
        backends = start_backends(1000)
        if "throughput" in phases:
            phase_throughput(args, out)
        if "apply" in phases:
            phase_apply(args, out)
        if "memory" in phases:
            phase_memory(args, out)
        backends.check_log()
    finally:
        cleanup()
        if os.environ.get("KEEP", "0") not in ("", "0"):
            log("kept %s" % WORK)
        elif not os.environ.get("E2E_DIR"):
            shutil.rmtree(WORK, ignore_errors=True)
    out["elapsed_s"] = time.monotonic() - T0
    stale = os.path.join(RESULTS, "results-failed.json")
    if os.path.exists(stale):
        os.remove(stale)
    with open(os.path.join(RESULTS, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    md = report(args, out, command, chart(out))
    with open(os.path.join(RESULTS, "results.md"), "w") as f:
        f.write(md.replace("](benches/e2e/results/", "]("))   # paths relative to results/
    print(md)
    full = set(phases) == {"throughput", "apply", "memory"} and not QUICK and not args.scenarios
    if args.readme or (args.readme is None and full):
        write_readme(md)
        log("README.md: the bench-e2e block is updated")
    else:
        log("README.md not updated (partial or QUICK run; --readme forces it)")
    log("done in %.0f s; results in %s" % (time.monotonic() - T0, RESULTS))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        main()
    except Fail as e:
        print("bench-e2e: FAILED: %s" % e, file=sys.stderr)
        if PARTIAL:
            with open(os.path.join(RESULTS, "results-failed.json"), "w") as f:
                json.dump(PARTIAL, f, indent=1)
            print("bench-e2e: the runs before the failure are in benches/e2e/results/results-failed.json "
                  "(no table is written)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print("bench-e2e: interrupted (%s); every nginx and wrk started was stopped" % (e or "Ctrl-C"), file=sys.stderr)
        sys.exit(130)
