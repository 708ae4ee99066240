#!/usr/bin/env bash
# Reload and churn under load, against both front ends: the nginx module gateway and
# the Lua gateway (each its own nginx, 2 workers, stress/module.conf and stress/lua.conf),
# in front of a separate backend nginx (8 servers on 127.0.0.1:26101-26108 answering 200
# at once, each with its own access log; 127.0.0.1:26110 answering after 0.5 s).
# A fresh gateway is started for every scenario and front end:
#
#   reload   `nginx -s reload` ten times, spread over a wrk run (one connection per
#            request): no failed request, no non-2xx (so no 503 for an unknown backend),
#            the posted document is still in force afterwards (GET
#            /configuration/backends, requests served by the new workers), 10 reloads
#            logged and ~22 worker pids in the access log. A second wrk with keep-alive
#            connections runs alongside, reported only (see the comment in the scenario).
#   churn    a changed backends document POSTed every 100 ms during a wrk run, endpoints
#            of "stress-churn" added and removed (the servers stay up): no failed request;
#            after the last POST (without 127.0.0.1:26108) and 1 s, a burst of requests
#            must not reach :26108 (its access log does not grow).
#   quit     `nginx -s quit` (SIGQUIT) while N requests to the slow backend are in flight
#            (own connections, no keep-alive) and wrk loads the gateway: all N complete
#            with 200 after the quit, and nginx exits. wrk's errors after the quit (the
#            listener is closed) are reported, not counted.
#   updates  10 000 (short run: 500) configuration POSTs alternating two documents of 100 backends x 10
#            endpoints (round robin, ewma, chash, sticky), as fast as answered, under
#            light wrk load: every POST 201, the same workers throughout, and each
#            worker's RssAnon (private memory; VmRSS printed too) grows by at most
#            RSS_BOUND_KB (4096) from the 1000th POST (short run: 100th) to the end.
#            Measured: the module's workers stay within ~0.1 MiB; the Lua workers'
#            LuaJIT heap makes them oscillate between ~8 and ~11 MiB from the 1000th
#            POST on with no upward trend, so a bound in percent of ~8 MiB would be
#            noise (one sample at a GC low gave +26 %); 4 MiB still fails a leak of
#            ~470 bytes per POST (under 5 bytes per backend) over a full run.
#   kill     SIGKILL of a worker during a wrk run on an ewma backend: the master respawns
#            it; requests right after the respawn (own connections, so both workers get
#            some) all succeed, including to a backend only the latest POST defines;
#            every X-Ewma-Score is a finite number; wrk's socket errors at the kill are at
#            most its connection count; no corrupt/panic/alert/crit/emerg line in the
#            error log (apart from the master's "exited on signal 9").
#
# Prints a markdown table: scenario | front end | requests | failed | notes.
# Exit status 1 if any scenario lost a request or failed a check.
#
# Usage: scripts/stress.sh            (after `make build`; `make stress`)
#        STRESS_SHORT=1 scripts/stress.sh   (durations / 5 or less, ~55 s; `make stress-short`)
# Env:   LIB (target/release/libingress_lb.so)  MODULE (target/release/ngx_http_ingress_lb_module.so)
#        NGINX (/usr/sbin/nginx)  FRONTENDS ("module lua")  SCENARIOS ("reload churn quit updates kill")
#        STRESS_DIR (a new temp dir, removed at the end unless KEEP=1)  RSS_BOUND_KB (4096)
# Ports: 127.0.0.1:26010-26014 (module gateways, one per scenario), :26020-26024 (Lua
# gateways), :26101-26110 (backends).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIB=${LIB:-$repo/target/release/libingress_lb.so}
MODULE=${MODULE:-$repo/target/release/ngx_http_ingress_lb_module.so}
NGINX=${NGINX:-/usr/sbin/nginx}
# nginx reads an exported NGINX variable as inherited listening sockets (binary
# upgrade): never pass it on.
export -n NGINX
FRONTENDS=${FRONTENDS:-module lua}
SCENARIOS=${SCENARIOS:-reload churn quit updates kill}
STRESS_SHORT=${STRESS_SHORT:-0}
RSS_BOUND_KB=${RSS_BOUND_KB:-4096}
NGX_MODULES=/usr/lib/nginx/modules
HELPER="python3 $repo/stress/helper.py"
WRK_SCRIPT=$repo/stress/count.lua
declare -A GW_PORT=([module]=26010 [lua]=26020)   # + the scenario's index
declare -A SC_INDEX=([reload]=0 [churn]=1 [quit]=2 [updates]=3 [kill]=4)

# Full run (~5 min on 2 CPUs) / short run (~55 s): a fifth of the durations or less;
# 500 updates rather than 2000, since a POST of the 100 x 10 document costs ~10 ms of
# the workers' CPU (2000 would take ~25 s per front end on a 2-CPU machine).
if [[ $STRESS_SHORT == 1 ]]; then
    RELOAD_SECS=3  CHURN_SECS=2  QUIT_SECS=2 QUIT_INFLIGHT=40  UPDATES=500   UPDATES_SAMPLE=100  KILL_SECS=2
else
    RELOAD_SECS=20 CHURN_SECS=10 QUIT_SECS=5 QUIT_INFLIGHT=100 UPDATES=10000 UPDATES_SAMPLE=1000 KILL_SECS=10
fi

for f in "$LIB" "$MODULE" "$NGX_MODULES/ngx_http_lua_module.so"; do
    [[ -f $f ]] || { echo "stress.sh: $f is missing (make build)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "stress.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }

if [[ -n ${STRESS_DIR:-} ]]; then
    mkdir -p "$STRESS_DIR"
else
    STRESS_DIR=$(mktemp -d /tmp/ilb-stress.XXXXXX)
fi
masters=()   # pid files of the nginx instances started here
is_master() { [[ $(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) == "nginx: master"* ]]; }
cleanup() {
    local p pid w
    for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done   # wrk still running
    for p in "${masters[@]}"; do
        pid=$(cat "$p" 2>/dev/null) && is_master "$pid" && kill -QUIT "$pid" 2>/dev/null || true
    done
    for p in "${masters[@]}"; do   # nginx removes its pid file when it has exited
        pid=$(cat "$p" 2>/dev/null) || continue
        for _ in $(seq 100); do is_master "$pid" || break; sleep 0.05; done
        if is_master "$pid"; then
            for w in $(pgrep -P "$pid"); do kill -KILL "$w" 2>/dev/null || true; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [[ ${KEEP:-0} == 1 ]]; then echo "stress.sh: kept $STRESS_DIR" >&2; else rm -rf "$STRESS_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "stress: $*" >&2; }

# nginx_start PREFIX: start the nginx whose conf/nginx.conf is under PREFIX.
nginx_start() {
    local prefix=$1
    mkdir -p "$prefix/logs" "$prefix/tmp"
    "$NGINX" -p "$prefix/" -c conf/nginx.conf -t -q
    "$NGINX" -p "$prefix/" -c conf/nginx.conf
    masters+=("$prefix/logs/nginx.pid")
}

# nginx_stop PREFIX: graceful stop, not waited for (a gateway takes up to ~2 s to exit;
# every scenario has its own ports, and cleanup waits for all of them).
nginx_stop() {
    local pid
    pid=$(cat "$1/logs/nginx.pid" 2>/dev/null) || return 0
    kill -QUIT "$pid" 2>/dev/null || true
}

wait_port() { # port
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "stress.sh: nothing listens on 127.0.0.1:$1" >&2
    return 1
}

start_backends() {
    local prefix=$STRESS_DIR/backends port servers=""
    for port in $(seq 26101 26108); do
        servers+="    server { listen 127.0.0.1:$port; access_log logs/pod-$port.log tiny;
             location / { return 200 \"pod-$port\\n\"; } }
"
    done
    mkdir -p "$prefix/conf"
    cat >"$prefix/conf/nginx.conf" <<EOF
load_module $NGX_MODULES/ndk_http_module.so;
load_module $NGX_MODULES/ngx_http_lua_module.so;
pid logs/nginx.pid;
error_log logs/error.log warn;
worker_processes 2;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    log_format tiny '\$msec';
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
$servers
    server { listen 127.0.0.1:26110;
             location / { content_by_lua_block { ngx.sleep(0.5) ngx.say("slow") } } }
}
EOF
    nginx_start "$prefix"
    wait_port 26110
}

# start_gateway FRONTEND NAME: a fresh gateway under $STRESS_DIR/NAME (SCENARIO-FRONTEND),
# on its own port, given doc.json.
start_gateway() {
    local fe=$1 prefix=$STRESS_DIR/$2 port=$((GW_PORT[$1] + SC_INDEX[${2%%-*}])) code
    mkdir -p "$prefix/conf"
    sed -e "s#@PORT@#$port#g" -e "s#@MODULE@#$MODULE#g" -e "s#@LIB@#$LIB#g" \
        -e "s#@ROOT@#$repo#g" -e "s#@PREFIX@#$prefix#g" "$repo/stress/$fe.conf" >"$prefix/conf/nginx.conf"
    nginx_start "$prefix"
    wait_port "$port"
    post "$port" "$STRESS_DIR/doc.json"
    sleep 0.4   # Lua workers apply within 0.25 s; module workers at their next request
}

post() { # port file
    local code
    code=$(curl -s -o "$STRESS_DIR/post.out" -w '%{http_code}' --data-binary "@$2" \
        "http://127.0.0.1:$1/configuration/backends")
    [[ $code == 201 ]] || { echo "stress.sh: POST to :$1 answered $code: $(cat "$STRESS_DIR/post.out")" >&2; return 1; }
}

master_of() { cat "$STRESS_DIR/$1/logs/nginx.pid"; }
workers_of() { pgrep -P "$1" | sort -n | tr '\n' ' '; }

# wrk_start OUT PORT SECONDS CONNECTIONS BACKEND [ewma]: wrk in the background ($!);
# with WRK_CLOSE=1 every request has its own connection (Connection: close).
wrk_start() {
    local out=$1 port=$2 secs=$3 conns=$4 backend=$5
    shift 5
    wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${secs}s" --timeout 5s -s "$WRK_SCRIPT" \
        -H "X-Backend: $backend" ${WRK_CLOSE:+-H "Connection: close"} \
        "http://127.0.0.1:$port/" -- "$@" >"$out" 2>&1 &
}

# field KEY LINE: the value of KEY=... in a RESULT line.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
# wrk_failed LINE: non-2xx responses + socket errors of a wrk RESULT line (0 if none).
wrk_failed() {
    [[ -n $1 ]] || { echo 0; return; }
    echo $(( $(field non2xx "$1") + $(field connect "$1") + $(field read "$1") + $(field write "$1") + $(field timeout "$1") ))
}
result_of() { grep -h '^RESULT' "$1" | tail -1; }

# Errors in a gateway's error log other than the master's report of the killed worker.
bad_log_lines() {
    grep -E '\[(alert|crit|emerg)\]|panic|corrupt' "$1" | grep -v 'exited on signal 9' || true
}

rows=()
failures=0
row() { # scenario fe requests failed ok|FAIL notes
    local verdict=$5
    [[ $verdict == ok ]] || failures=$((failures + 1))
    rows+=("| $1 | $2 | $3 | $4 | $verdict: $6 |")
    log "$1 / $2: requests $3, failed $4, $verdict: $6"
}

# --- scenarios --------------------------------------------------------------------------

scenario_reload() {
    local fe=$1 name=reload-$1 port=$((GW_PORT[$1] + SC_INDEX[reload])) prefix=$STRESS_DIR/reload-$1
    local master i r req failed problems="" gens got
    start_gateway "$fe" "$name"
    master=$(master_of "$name")
    # Counted: requests on their own connections. Keep-alive connections cannot all
    # survive a reload: an old worker closes each one after its response in progress
    # (nginx does, when exiting), and wrk, which has already sent the next request on
    # it, counts a read error (a client retries such a request, RFC 9112 9.3.1). A second
    # wrk with keep-alive shows how many: reported, not counted.
    WRK_CLOSE=1 wrk_start "$prefix/wrk.out" "$port" "$RELOAD_SECS" 32 stress-rr
    local wrk_pid=$!
    wrk_start "$prefix/wrk-ka.out" "$port" "$RELOAD_SECS" 8 stress-ewma
    local ka_pid=$!
    local step
    step=$(awk -v d="$RELOAD_SECS" 'BEGIN { printf "%.2f", d / 12 }')
    for i in $(seq 10); do
        sleep "$step"
        "$NGINX" -p "$prefix/" -c conf/nginx.conf -s reload 2>/dev/null
    done
    wait "$wrk_pid" || true
    wait "$ka_pid" || true
    r=$(result_of "$prefix/wrk.out")
    local ka
    ka=$(result_of "$prefix/wrk-ka.out")
    [[ -n $r ]] || { row reload "$fe" - - FAIL "no wrk result: $(tail -3 "$prefix/wrk.out")"; nginx_stop "$prefix"; return; }
    sleep 0.5
    req=$(field requests "$r")
    failed=$(( $(field non2xx "$r") + $(field connect "$r") + $(field read "$r") + $(field write "$r") + $(field timeout "$r") ))
    ((failed == 0)) || problems+=" wrk: $(field codes "$r") connect/read/write/timeout $(field connect "$r")/$(field read "$r")/$(field write "$r")/$(field timeout "$r");"
    # The configuration in force after the last reload: the document, and requests.
    got=$(curl -s "http://127.0.0.1:$port/configuration/backends")
    [[ $got == "$(cat "$STRESS_DIR/doc.json")" ]] || problems+=" GET /configuration/backends differs from the posted document;"
    local b burst
    for b in stress-rr stress-ewma stress-chash; do
        burst=$($HELPER burst "http://127.0.0.1:$port/" 100 "$b" 2>>"$prefix/helper.err" | tail -1) || true
        [[ $(field fail "$burst") == 0 && $(field ok "$burst") == 100 ]] || problems+=" after the reloads $b: $burst;"
        req=$((req + $(field ok "$burst") + $(field fail "$burst")))
        failed=$((failed + $(field fail "$burst")))
    done
    local n503 reloads
    n503=$(awk '$1 == 503' "$prefix/logs/access.log" | wc -l)
    ((n503 == 0)) || problems+=" $n503 responses 503 in the access log;"
    gens=$(awk '{ print $2 }' "$prefix/logs/access.log" | sort -u | wc -l)
    reloads=$(grep -c 'SIGHUP) received' "$prefix/logs/error.log" || true)
    ((reloads == 10)) || problems+=" $reloads reloads logged, not 10;"
    [[ -z $(bad_log_lines "$prefix/logs/error.log") ]] || problems+=" error log: $(bad_log_lines "$prefix/logs/error.log" | head -1);"
    nginx_stop "$prefix"
    if [[ -z $problems ]]; then
        row reload "$fe" "$req" "$failed" ok "10 reloads in ${RELOAD_SECS} s (wrk, one connection per request), $gens worker pids served; document in force after the last reload (GET + 300 requests, 3 backends), no 503; keep-alive wrk alongside (not counted): $(field requests "$ka") requests, $(field non2xx "$ka") non-2xx, $(field read "$ka") keep-alive connections closed by exiting workers"
    else
        row reload "$fe" "$req" "$failed" FAIL "${problems# }"
    fi
}

scenario_churn() {
    local fe=$1 name=churn-$1 port=$((GW_PORT[$1] + SC_INDEX[churn])) prefix=$STRESS_DIR/churn-$1
    local r c req failed problems="" x=26108 xlog=$STRESS_DIR/backends/logs/pod-26108.log
    start_gateway "$fe" "$name"
    local x0 x1 x2
    x0=$(wc -l <"$xlog")
    wrk_start "$prefix/wrk.out" "$port" "$((CHURN_SECS + 1))" 32 stress-churn
    local wrk_pid=$!
    sleep 0.5
    c=$($HELPER churn "http://127.0.0.1:$port/configuration/backends" 0.1 "$CHURN_SECS" "$x" 2>>"$prefix/helper.err" | tail -1) || true
    wait "$wrk_pid" || true
    r=$(result_of "$prefix/wrk.out")
    [[ -n $r ]] || { row churn "$fe" - - FAIL "no wrk result: $(tail -3 "$prefix/wrk.out")"; nginx_stop "$prefix"; return; }
    req=$(field requests "$r")
    failed=$(( $(field non2xx "$r") + $(field connect "$r") + $(field read "$r") + $(field write "$r") + $(field timeout "$r") ))
    ((failed == 0)) || problems+=" wrk: $(field codes "$r") connect/read/write/timeout $(field connect "$r")/$(field read "$r")/$(field write "$r")/$(field timeout "$r");"
    [[ $(field bad "$c") == 0 ]] || problems+=" churn POSTs: $c;"
    # After the final POST (without :26108) and 1 s, no new request reaches :26108.
    sleep 1
    x1=$(wc -l <"$xlog")
    ((x1 > x0)) || problems+=" :$x got no request during the churn (the check would prove nothing);"
    local burst
    burst=$($HELPER burst "http://127.0.0.1:$port/" 200 stress-churn 2>>"$prefix/helper.err" | tail -1) || true
    wrk -t2 -c16 -d1s -H "X-Backend: stress-churn" "http://127.0.0.1:$port/" >"$prefix/wrk-after.out" 2>&1 || true
    sleep 0.2
    x2=$(wc -l <"$xlog")
    [[ $(field fail "$burst") == 0 ]] || problems+=" burst after the last POST: $burst;"
    req=$((req + $(field ok "$burst") + $(field fail "$burst")))
    failed=$((failed + $(field fail "$burst")))
    ((x2 == x1)) || problems+=" :$x got $((x2 - x1)) requests after its removal;"
    [[ -z $(bad_log_lines "$prefix/logs/error.log") ]] || problems+=" error log: $(bad_log_lines "$prefix/logs/error.log" | head -1);"
    nginx_stop "$prefix"
    local after
    after=$(awk '/requests in/ { print $1 }' "$prefix/wrk-after.out")
    if [[ -z $problems ]]; then
        row churn "$fe" "$req" "$failed" ok "$(field posts "$c") POSTs in $(field elapsed "$c") s (all 201), :$x listed in $(field with_final "$c") and served $((x1 - x0)) requests; after its removal + 1 s: 0 of ${after:-?} + 200 requests reached it"
    else
        row churn "$fe" "$req" "$failed" FAIL "${problems# }"
    fi
}

scenario_quit() {
    local fe=$1 name=quit-$1 port=$((GW_PORT[$1] + SC_INDEX[quit])) prefix=$STRESS_DIR/quit-$1
    local r q master problems=""
    start_gateway "$fe" "$name"
    master=$(master_of "$name")
    wrk_start "$prefix/wrk.out" "$port" "$QUIT_SECS" 16 stress-rr
    local wrk_pid=$!
    sleep 1
    q=$($HELPER quit "http://127.0.0.1:$port/" "$QUIT_INFLIGHT" "$master" 2>>"$prefix/helper.err" | tail -1) || true
    wait "$wrk_pid" || true
    r=$(result_of "$prefix/wrk.out")
    [[ -n $q ]] || { row quit "$fe" - - FAIL "no client result: $(tail -3 "$prefix/helper.err")"; return; }
    [[ $(field lost "$q") == 0 ]] || problems+=" $(field lost "$q") in-flight requests lost ($(head -2 "$prefix/helper.err" | tr '\n' ' '));"
    [[ $(field master_exited "$q") == 1 ]] || problems+=" nginx did not exit within 10 s;"
    [[ $(field late_other "$q") == 0 ]] || problems+=" $(field late_other "$q") requests failed before the quit;"
    [[ -z $(bad_log_lines "$prefix/logs/error.log") ]] || problems+=" error log: $(bad_log_lines "$prefix/logs/error.log" | head -1);"
    local wrkn="wrk: $(field requests "$r") requests before the quit, $(( $(field connect "$r") + $(field read "$r") + $(field write "$r") )) socket errors (connections refused or closed once nginx quit), $(field non2xx "$r") non-2xx"
    if [[ -z $problems ]]; then
        row quit "$fe" "$(field inflight "$q")" "$(field lost "$q")" ok "$(field completed_ok "$q") of $(field inflight "$q") requests in flight at SIGQUIT (0.5 s backend) completed 200 after it; nginx exited; new connections refused after the quit; $wrkn"
    else
        row quit "$fe" "$(field inflight "$q")" "$(field lost "$q")" FAIL "${problems# }; $wrkn"
    fi
}

scenario_updates() {
    local fe=$1 name=updates-$1 port=$((GW_PORT[$1] + SC_INDEX[updates])) prefix=$STRESS_DIR/updates-$1
    local u master problems="" r
    start_gateway "$fe" "$name"
    master=$(master_of "$name")
    # light traffic during the loop, so that module workers (which apply a new document at
    # their next request) apply the updates too
    wrk_start "$prefix/wrk.out" "$port" 3600 4 stress-rr
    local wrk_pid=$!
    sleep 0.5
    u=$($HELPER updates "http://127.0.0.1:$port/configuration/backends" "$UPDATES" "$UPDATES_SAMPLE" \
        "$STRESS_DIR/big-a.json" "$STRESS_DIR/big-b.json" "$master" "$RSS_BOUND_KB" 2>>"$prefix/helper.err" | tail -1) || true
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" || true
    r=$(result_of "$prefix/wrk.out")
    [[ -n $u ]] || { row updates "$fe" - - FAIL "no result: $(tail -3 "$prefix/helper.err")"; nginx_stop "$prefix"; return; }
    local wf failed
    wf=$(wrk_failed "$r")
    failed=$(( $(field bad "$u") + wf ))
    [[ $(field bad "$u") == 0 ]] || problems+=" $(field bad "$u") POSTs not answered 201;"
    [[ $(field same_workers "$u") == 1 ]] || problems+=" the worker set changed (a worker died?);"
    awk -v g="$(field worst_growth_kB "$u")" -v b="$RSS_BOUND_KB" 'BEGIN { exit !(g != "" && g <= b) }' \
        || problems+=" RssAnon grew $(field worst_growth_kB "$u") kB after the first $UPDATES_SAMPLE POSTs (bound $RSS_BOUND_KB kB);"
    ((wf == 0)) || problems+=" traffic during the updates: $wf failed ($(field codes "$r"));"
    [[ -z $(bad_log_lines "$prefix/logs/error.log") ]] || problems+=" error log: $(bad_log_lines "$prefix/logs/error.log" | head -1);"
    nginx_stop "$prefix"
    local rss notes rq
    rq=$(field requests "$r"); rq=${rq:-0}
    rss="RssAnon $(field anon_kB "$u" | sed 's#;#, #g'), VmRSS $(field vmrss_kB "$u" | sed 's#;#, #g')"
    notes="$(field posts "$u") POSTs ($(du -k "$STRESS_DIR/big-a.json" | cut -f1) KiB each) in $(field elapsed "$u") s; per worker, kB before / after $UPDATES_SAMPLE / after $(field posts "$u"): $rss; worst RssAnon growth after $UPDATES_SAMPLE: $(field worst_growth_kB "$u") kB = $(field worst_growth "$u") % (bound $RSS_BOUND_KB kB); RssAnon range from then on (sampled every $((UPDATES / 10))): $(field range_kB "$u") kB; wrk alongside: $(field requests "$r") requests"
    if [[ -z $problems ]]; then
        row updates "$fe" "$(( $(field posts "$u") + rq ))" "$failed" ok "$notes"
    else
        row updates "$fe" "$(( $(field posts "$u") + rq ))" "$failed" FAIL "${problems# } $notes"
    fi
}

scenario_kill() {
    local fe=$1 name=kill-$1 port=$((GW_PORT[$1] + SC_INDEX[kill])) prefix=$STRESS_DIR/kill-$1
    local r master before victim after newpid problems="" conns=16
    start_gateway "$fe" "$name"
    master=$(master_of "$name")
    # the configuration in force when the worker dies defines one more backend
    post "$port" "$STRESS_DIR/doc-late.json"
    wrk_start "$prefix/wrk.out" "$port" "$KILL_SECS" "$conns" stress-ewma ewma
    local wrk_pid=$!
    sleep "$(awk -v d="$KILL_SECS" 'BEGIN { printf "%.2f", d / 3 }')"
    before=$(workers_of "$master")
    victim=${before%% *}
    local owned
    owned=$(ss -Htnp state established "( sport = :$port )" 2>/dev/null | grep -c "pid=$victim," || true)
    kill -KILL "$victim"
    newpid=""
    for _ in $(seq 500); do
        after=$(workers_of "$master")
        for p in $after; do [[ " $before " == *" $p "* ]] || newpid=$p; done
        [[ -n $newpid ]] && break
        sleep 0.01
    done
    local b1 b2
    b1=$($HELPER burst "http://127.0.0.1:$port/" 200 stress-late 2>>"$prefix/helper.err" | tail -1) || true
    b2=$($HELPER burst "http://127.0.0.1:$port/" 200 stress-ewma ewma 2>>"$prefix/helper.err" | tail -1) || true
    wait "$wrk_pid" || true
    r=$(result_of "$prefix/wrk.out")
    [[ -n $r ]] || { row kill "$fe" - - FAIL "no wrk result: $(tail -3 "$prefix/wrk.out")"; nginx_stop "$prefix"; return; }
    [[ -n $newpid ]] || problems+=" no new worker within 5 s;"
    local sock=$(( $(field connect "$r") + $(field read "$r") + $(field write "$r") + $(field timeout "$r") ))
    ((sock <= conns)) || problems+=" wrk: $sock socket errors, more than its $conns connections;"
    [[ $(field non2xx "$r") == 0 ]] || problems+=" wrk: non-2xx $(field codes "$r");"
    [[ $(field badscore "$r") == 0 ]] || problems+=" wrk: $(field badscore "$r") X-Ewma-Score values not finite;"
    local b
    for b in "$b1" "$b2"; do
        [[ $(field fail "$b") == 0 && $(field badscore "$b") == 0 ]] || problems+=" after the respawn: $b;"
    done
    [[ ",$(field workers "$b1"),$(field workers "$b2")," == *",$newpid,"* ]] || problems+=" the new worker $newpid answered none of the 400 requests after the respawn;"
    [[ -z $(bad_log_lines "$prefix/logs/error.log") ]] || problems+=" error log: $(bad_log_lines "$prefix/logs/error.log" | head -1);"
    grep -q 'exited on signal 9' "$prefix/logs/error.log" || problems+=" the master did not log the killed worker;"
    nginx_stop "$prefix"
    local req=$(( $(field requests "$r") + 400 ))
    local failed=$(( sock + $(field non2xx "$r") + $(field fail "$b1") + $(field fail "$b2") ))
    local notes="worker $victim killed at $(awk -v d="$KILL_SECS" 'BEGIN { printf "%.1f", d / 3 }') s, $newpid respawned; wrk: $sock socket errors at the kill (the killed worker had $owned of wrk's $conns connections; <= $conns allowed), $(field scored "$r") X-Ewma-Score all finite; after the respawn 400/400 OK (200 to the backend only the latest POST has, 200 ewma), the new worker among those answering; no alert/panic in the error log"
    if [[ -z $problems ]]; then
        row kill "$fe" "$req" "$failed" ok "$notes"
    else
        row kill "$fe" "$req" "$failed" FAIL "${problems# }"
    fi
}

# --- main -------------------------------------------------------------------------------

t0=$(date +%s)
$HELPER doc "$STRESS_DIR/doc.json"
$HELPER doc "$STRESS_DIR/doc-late.json" --late
$HELPER bigdoc "$STRESS_DIR/big-a.json" a
$HELPER bigdoc "$STRESS_DIR/big-b.json" b
start_backends
log "$( [[ $STRESS_SHORT == 1 ]] && echo short || echo full ) run in $STRESS_DIR; LIB=$LIB MODULE=$MODULE"

for scenario in $SCENARIOS; do
    for fe in $FRONTENDS; do
        log "--- $scenario / $fe (at $(( $(date +%s) - t0 )) s)"
        "scenario_$scenario" "$fe"
    done
done

echo
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), 2 workers per gateway, $(nproc) CPUs, $( [[ $STRESS_SHORT == 1 ]] && echo 'short run (STRESS_SHORT=1)' || echo 'full run'), $(( $(date +%s) - t0 )) s"
echo
echo "| scenario | front end | requests | failed | notes |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
if ((failures > 0)); then
    echo
    echo "stress.sh: $failures scenario(s) failed" >&2
    exit 1
fi
