#!/usr/bin/env bash
# The demo gateway: three backend servers, nginx with the ingress-lb module on
# 127.0.0.1:8080 and nginx with the Lua front end on 127.0.0.1:8081, both given the
# same configuration through the controller's protocol. Ctrl-C stops everything.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
nginx="${NGINX:-/usr/sbin/nginx}"
export -n NGINX # nginx would read it as inherited sockets
lib="$root/target/release/libingress_lb.so"
module="$root/target/release/ngx_http_ingress_lb_module.so"
work="$root/target/demo"
for f in "$lib" "$module"; do
    [[ -f $f ]] || { echo "demo: $f is missing; run 'make build' first" >&2; exit 1; }
done

start() { # name conf-template
    local name=$1 prefix="$work/$1"
    mkdir -p "$prefix/conf" "$prefix/logs"
    sed -e "s#@ROOT@#$root#g" -e "s#@MODULE@#$module#g" -e "s#@LIB@#$lib#g" "$2" >"$prefix/conf/nginx.conf"
    "$nginx" -p "$prefix" -c conf/nginx.conf -t -q
    "$nginx" -p "$prefix" -c conf/nginx.conf
    started+=("$prefix")
}

stop() {
    trap - INT TERM EXIT
    for prefix in "${started[@]}"; do
        "$nginx" -p "$prefix" -c conf/nginx.conf -s quit 2>/dev/null || true
    done
    echo; echo "demo: stopped"
}

started=()
trap stop INT TERM EXIT
start backends "$root/demo/backends.conf"
start module "$root/demo/module.conf"
start lua "$root/demo/lua.conf"
sleep 0.5

for port in 8080 8081; do
    for doc in backends servers; do
        code=$(curl -sS -o "$work/post.out" -w '%{http_code}' --data-binary @"$root/demo/$doc.json" \
            "http://127.0.0.1:$port/configuration/$doc")
        [[ $code == 201 ]] || { echo "demo: POST $doc to :$port answered $code: $(cat "$work/post.out")" >&2; exit 1; }
    done
done
sleep 1

cat <<MSG

ingress-lb demo is running (logs under target/demo/*/logs):
  nginx + ingress-lb module    http://127.0.0.1:8080   https://127.0.0.1:8443
  nginx + Lua front end        http://127.0.0.1:8081   https://127.0.0.1:8444
  backend "default-demo-80" (round robin): 127.0.0.1:9101, :9102, :9103 and :9199
  (nothing listens there: requests that land on it are retried on another pod);
  default-demo-chash-80, default-demo-ewma-80, default-demo-sticky-80 on the three
  pods, chosen with the X-Backend header; default-demo-web-80 (pods 1-2) with the
  canary default-demo-web-canary-80 (pod 3: header X-Canary, cookie "canary", 20 %)
  certificates (demo/servers.json): exact.example.com, *.b.example.com,
  chain.example.com and a default; other names get the static certificate

Try:
  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:8080/hello; done
  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:8081/hello; done
  for u in /a /b /c /a /b /c; do curl -s -H 'X-Backend: default-demo-chash-80' http://127.0.0.1:8080\$u; done
                                                                    # chash by \$request_uri: same URI, same pod
  curl -si -H 'X-Backend: default-demo-sticky-80' http://127.0.0.1:8081/ | grep -i set-cookie
                                                                    # sticky: send that cookie back, stay on the pod
  for i in 1 2 3; do curl -si -H 'X-Backend: default-demo-ewma-80' http://127.0.0.1:8080/ | grep -i x-ewma; done
  for i in \$(seq 10); do curl -s -H 'X-Backend: default-demo-web-80' http://127.0.0.1:8080/; done
                                                                    # canary by weight: about 2 in 10 on pod-3
  curl -si -H 'X-Backend: default-demo-web-80' -H 'X-Canary: always' http://127.0.0.1:8081/ | grep -i -e canary -e pod
  curl -s -H 'X-Backend: default-demo-web-80' -b 'canary=never' http://127.0.0.1:8080/   # never the canary
  for h in exact.example.com a.b.example.com x.a.b.example.com; do
    openssl s_client -connect 127.0.0.1:8443 -servername \$h </dev/null 2>/dev/null | openssl x509 -noout -subject
  done                                                              # exact, wildcard, default
  curl -s 'http://127.0.0.1:8080/configuration/certs?hostname=exact.example.com' | head -2
  curl -s http://127.0.0.1:8080/configuration/backends            # the configuration in force
  curl -si -H 'X-Backend: nope' http://127.0.0.1:8080/              # unknown backend: 503
  curl -si --data-binary '[{"name":"x","endpoints":[{"address":"10.0.0.1","port":"0"}]}]' \\
       http://127.0.0.1:8081/configuration/backends                 # rejected: 400 + reason

Ctrl-C stops the demo.
MSG
while sleep 3600; do :; done
