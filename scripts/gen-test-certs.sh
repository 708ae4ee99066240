#!/usr/bin/env bash
# Regenerates the test certificates in tests/data/certs (checked in; valid for 100
# years, so the tests never need this at run time). Each <name>.pem holds the
# certificate followed by its key, as the controller sends them; <name>.crt and
# <name>.key are the two halves for nginx's static ssl_certificate.
set -euo pipefail
cd "$(dirname "$0")/../tests/data/certs"
gen() { # name subject-CN [SAN...]
    local name=$1 cn=$2; shift 2
    local san="DNS:$cn"; for s in "$@"; do san="$san,DNS:$s"; done
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
        -subj "/CN=$cn/O=ingress-lb tests" -addext "subjectAltName=$san" \
        -keyout "$name.key" -out "$name.crt" 2>/dev/null
    cat "$name.crt" "$name.key" > "$name.pem"
}
gen default default.test
gen static static.test
gen exact exact.example.com
gen exact-v2 exact.example.com
gen wildcard '*.b.example.com'
gen wildcard-top '*.example.com'
gen other other.example.com
# A chain: leaf signed by an intermediate CA; chain.pem = leaf, intermediate, key.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
    -subj "/CN=ingress-lb test CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=chain.example.com" \
    -keyout chain.key -out chain.csr 2>/dev/null
openssl x509 -req -in chain.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 36500 \
    -extfile <(printf 'subjectAltName=DNS:chain.example.com') -out chain.crt 2>/dev/null
cat chain.crt ca.crt chain.key > chain.pem
rm -f chain.csr ca.srl
# Broken inputs: a certificate with another certificate's key, and garbage.
cat exact.crt other.key > mismatched.pem
printf -- '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n' > bad.pem
cat exact.key > keyonly.pem
