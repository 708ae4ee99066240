#!/usr/bin/env bash
# TLS handshakes per second with 10 000 hostnames loaded: a plain static
# ssl_certificate server, the nginx module (ingress_lb_certificate on), and the Lua
# front end (ssl_certificate_by_lua_block { certificate.call() }, lua/certificate.lua).
#
# Each mode is a server block of its own nginx (one worker by default). Clients are
# Perl processes (IO::Socket::SSL, Debian package libio-socket-ssl-perl; `openssl
# s_time` sends no SNI, so it cannot exercise the lookup) that make full handshakes
# (no session resumption, no certificate verification) for DURATION seconds, each
# with the SNI of the next of the 10 000 hostnames, then close. Reported: handshakes
# per second, and the CPU time the nginx worker(s) spent per handshake (from
# /proc/<pid>/stat), which does not depend on how fast the clients are.
#
# The servers document maps HOSTNAMES hostnames (h<i>.bench.example.com) to a few
# certificates of tests/data/certs (exact, other, wildcard, chain: an intermediate
# is sent too) and `_` to default. Before measuring, one handshake per mode checks
# which certificate is served.
#
# Usage: scripts/bench-tls.sh            (after `make build`)
# Env:   DURATION (10) CLIENTS (2) WORKERS (1) HOSTNAMES (10000) PORT_BASE (22950)
#        MODULE   (target/release/ngx_http_ingress_lb_module.so)
#        LIB      (target/release/libingress_lb.so, for the lua mode)
#        NGINX    (/usr/sbin/nginx)   BENCH_DIR (/tmp/ilb-bench-tls)
#        MODES    ("static module lua"; also lua-noop: an empty ssl_certificate_by_lua,
#                  the floor of the Lua path)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-2}
WORKERS=${WORKERS:-1}
HOSTNAMES=${HOSTNAMES:-10000}
PORT_BASE=${PORT_BASE:-22950}
MODULE=${MODULE:-$repo/target/release/ngx_http_ingress_lb_module.so}
LIB=${LIB:-$repo/target/release/libingress_lb.so}
NGINX=${NGINX:-/usr/sbin/nginx}
# nginx reads an exported NGINX variable as inherited listening sockets (binary
# upgrade): never pass it on.
export -n NGINX
BENCH_DIR=${BENCH_DIR:-/tmp/ilb-bench-tls}
MODES=${MODES:-static module lua}
NGX_MODULES=/usr/lib/nginx/modules
CERTS=$repo/tests/data/certs

perl -MIO::Socket::SSL -e1 2>/dev/null || { echo "bench-tls.sh: needs IO::Socket::SSL (apt-get install libio-socket-ssl-perl)" >&2; exit 1; }

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"

# The servers document, as the controller encodes it.
perl -e '
    my ($certs, $n) = @ARGV;
    sub pem { open my $f, "<", "$certs/$_[0].pem" or die; local $/; my $s = <$f>;
              $s =~ s/\n/\\n/g; "\"$s\"" }
    my @uids = qw(exact other wildcard chain);
    my %map = ("_" => "default");
    $map{sprintf "h%05d.bench.example.com", $_} = $uids[$_ % @uids] for 0 .. $n - 1;
    print "{\"certificates\":{",
        join(",", map { "\"$_\":" . pem($_) } @uids, "default"),
        "},\"servers\":{",
        join(",", map { "\"$_\":\"$map{$_}\"" } sort keys %map), "}}";
' "$CERTS" "$HOSTNAMES" > servers.json
seq -f 'h%05g.bench.example.com' 0 $((HOSTNAMES - 1)) > hostnames.txt

# The handshake client: CLIENTS processes, each for DURATION seconds.
cat > client.pl <<'EOF'
use strict;
use warnings;
use IO::Socket::SSL;
use Time::HiRes qw(time);
my ($port, $duration, $clients, $names_file) = @ARGV;
open my $f, '<', $names_file or die;
chomp(my @names = <$f>);
my @kids;
for my $c (0 .. $clients - 1) {
    pipe(my $r, my $w) or die;
    my $pid = fork // die;
    if (!$pid) {
        close $r;
        my $ctx = IO::Socket::SSL::SSL_Context->new(SSL_verify_mode => SSL_VERIFY_NONE) or die;
        my ($n, $err, $i) = (0, 0, $c * 7919);
        my $end = time + $duration;
        while (time < $end) {
            my $s = IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                SSL_reuse_ctx => $ctx, SSL_hostname => $names[$i++ % @names]);
            if ($s) { $n++; $s->close(SSL_no_shutdown => 1) } else { $err++ }
        }
        print $w "$n $err\n";
        exit 0;
    }
    close $w;
    push @kids, $r;
}
my ($n, $err) = (0, 0);
for my $r (@kids) { my ($a, $b) = split ' ', scalar <$r>; $n += $a; $err += $b }
1 while wait != -1;
print "$n $err\n";
EOF

# Which certificate a handshake with this SNI gets (its CN).
served() {
    openssl s_client -connect "127.0.0.1:$1" -servername "$2" </dev/null 2>/dev/null \
        | openssl x509 -noout -subject 2>/dev/null | sed 's/.*CN *= *\([^,]*\).*/\1/'
}

# CPU ticks (user + system) of the worker processes of the nginx whose pid file is $1.
worker_ticks() {
    local master total=0 pid
    master=$(cat "$1")
    for pid in $(pgrep -P "$master"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

started=()
cleanup() {
    local p
    for p in "${started[@]}"; do
        [[ -f $p ]] && kill -QUIT "$(cat "$p")" 2>/dev/null || true
    done
}
trap cleanup EXIT

# start_nginx NAME load_module-lines http-body: an nginx with prefix $BENCH_DIR/NAME
start_nginx() {
    local name=$1 loads=$2 http=$3
    mkdir -p "$name/logs" "$name/conf"
    cat > "$name/conf/nginx.conf" <<EOF
$loads
worker_processes $WORKERS;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    ssl_session_cache off;
    ssl_session_tickets off;
    client_body_temp_path /tmp/ilb-bench-tls-body-$name;
$http
}
EOF
    "$NGINX" -p "$BENCH_DIR/$name/" -c conf/nginx.conf
    started+=("$BENCH_DIR/$name/logs/nginx.pid")
    sleep 0.5
}

post() { # url file
    local code
    code=$(curl -s -o /tmp/ilb-bench-tls-post.out -w '%{http_code}' --data-binary "@$2" "$1")
    [[ $code == 201 ]] || { echo "POST $1: $code $(cat /tmp/ilb-bench-tls-post.out)" >&2; exit 1; }
}

declare -A PORT=([static]=$((PORT_BASE + 1)) [module]=$((PORT_BASE + 2)) [lua]=$((PORT_BASE + 3))
                 [lua-noop]=$((PORT_BASE + 5)))
declare -A PIDFILE SKIP
tls_server() { # port extra-lines
    cat <<EOF
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $CERTS/static.crt;
        ssl_certificate_key $CERTS/static.key;
$2
        location / { return 200 "ok\n"; }
    }
EOF
}

for mode in $MODES; do
    case $mode in
    static)
        start_nginx static "" "$(tls_server "${PORT[static]}" "")"
        ;;
    module)
        [[ -f $MODULE ]] || { echo "bench-tls.sh: $MODULE missing (make module)" >&2; exit 1; }
        start_nginx module "load_module $MODULE;" "
    ingress_lb_zone 1m;
    server {
        listen 127.0.0.1:$PORT_BASE;
        location /configuration {
            client_max_body_size 100m;
            client_body_buffer_size 100m;
            ingress_lb_configuration;
        }
    }
$(tls_server "${PORT[module]}" "        ingress_lb_certificate on;")"
        post "http://127.0.0.1:$PORT_BASE/configuration/servers" servers.json
        ;;
    lua)
        if [[ ! -f $repo/lua/certificate.lua || ! -f $LIB || ! -f $NGX_MODULES/ngx_http_lua_module.so ]]; then
            SKIP[lua]="needs lua/certificate.lua, $LIB and libnginx-mod-http-lua"
            continue
        fi
        start_nginx lua "load_module $NGX_MODULES/ndk_http_module.so;
load_module $NGX_MODULES/ngx_http_lua_module.so;" "
    lua_package_path \"$repo/lua/?.lua;/usr/share/lua/5.1/?.lua;;\";
    lua_shared_dict configuration_data 64m;
    lua_shared_dict certificate_data 64m;
    lua_shared_dict certificate_servers 16m;
    lua_shared_dict ocsp_response_cache 5m;
    init_by_lua_block {
        local core = require(\"ingress_lb.core\")
        core.configure{ library = \"$LIB\" }
        assert(core.load())
        configuration = require(\"configuration\")
        balancer = require(\"balancer\")
        certificate = require(\"certificate\")
    }
    init_worker_by_lua_block { balancer.init_worker() }
    server {
        listen 127.0.0.1:$((PORT_BASE + 4));
        location /configuration {
            client_max_body_size 100m;
            client_body_buffer_size 100m;
            content_by_lua_block { configuration.call() }
        }
    }
$(tls_server "${PORT[lua]}" "        ssl_certificate_by_lua_block { certificate.call() }")"
        post "http://127.0.0.1:$((PORT_BASE + 4))/configuration/servers" servers.json
        sleep 1.5 # the workers' sync timer
        ;;
    lua-noop)
        # The floor of the Lua path: ssl_certificate_by_lua running an empty block
        # (the static certificate answers), to tell its own cost from the lookup's.
        if [[ ! -f $NGX_MODULES/ngx_http_lua_module.so ]]; then
            SKIP[lua-noop]="needs libnginx-mod-http-lua"
            continue
        fi
        start_nginx lua-noop "load_module $NGX_MODULES/ndk_http_module.so;
load_module $NGX_MODULES/ngx_http_lua_module.so;" "
    lua_package_path \"/usr/share/lua/5.1/?.lua;;\";
$(tls_server "${PORT[lua-noop]}" "        ssl_certificate_by_lua_block { }")"
        ;;
    *) echo "bench-tls.sh: unknown mode $mode" >&2; exit 1 ;;
    esac
    PIDFILE[$mode]=$BENCH_DIR/$mode/logs/nginx.pid
done

echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), $WORKERS worker(s), $CLIENTS client processes, ${DURATION}s per mode, $HOSTNAMES hostnames, $(nproc) CPUs"
echo "served for h00000.bench.example.com (exact) / h00003 (chain) / none.example.org (default):"
for mode in $MODES; do
    [[ -n ${SKIP[$mode]:-} ]] && continue
    printf '  %-7s %s / %s / %s\n' "$mode" "$(served "${PORT[$mode]}" h00000.bench.example.com)" \
        "$(served "${PORT[$mode]}" h00003.bench.example.com)" "$(served "${PORT[$mode]}" none.example.org)"
done
echo
printf '| %-8s | %14s | %22s | %6s |\n' mode "handshakes/s" "worker CPU/handshake" errors
printf '| %-8s | %14s | %22s | %6s |\n' -------- -------------- ---------------------- ------
hz=$(getconf CLK_TCK)
for mode in $MODES; do
    if [[ -n ${SKIP[$mode]:-} ]]; then
        printf '| %-8s | %14s | %22s | %6s |\n' "$mode" "skipped" "${SKIP[$mode]:0:22}" "-"
        continue
    fi
    t0=$(worker_ticks "${PIDFILE[$mode]}")
    read -r n err < <(perl client.pl "${PORT[$mode]}" "$DURATION" "$CLIENTS" hostnames.txt)
    t1=$(worker_ticks "${PIDFILE[$mode]}")
    rate=$(awk -v n="$n" -v d="$DURATION" 'BEGIN { printf "%.0f", n / d }')
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f us", n ? t / hz / n * 1e6 : 0 }')
    printf '| %-8s | %14s | %22s | %6s |\n' "$mode" "$rate" "$cpu" "$err"
done
for mode in $MODES; do
    [[ -n ${SKIP[$mode]:-} ]] && continue
    if grep -q '\[\(alert\|crit\|emerg\)\]' "$BENCH_DIR/$mode/logs/error.log"; then
        echo "($mode: see $BENCH_DIR/$mode/logs/error.log)"
    fi
done
