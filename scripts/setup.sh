#!/usr/bin/env bash
# Install what ingress-lb needs to build, test and run, from Debian's packages.
# Idempotent: installs only what is missing. Run as root (or with sudo available).
set -euo pipefail

packages=(
    # runtime: nginx 1.22.1 built --with-compat, OpenResty's Lua stack for the Lua front end
    nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson
    # building the nginx module: nginx sources + configure's dependencies, bindgen's libclang
    nginx-dev libclang-dev libssl-dev libpcre2-dev zlib1g-dev pkg-config gcc make
    # the Test::Nginx::Socket suites (real Test::Nginx or the bundled runner) and tools
    perl libtest-base-perl libipc-run-perl libtext-diff-perl liblist-moreutils-perl libwww-perl libio-socket-ssl-perl
    curl wrk openssl
    # make bench-e2e's chart (benches/e2e/run.py: gnuplot's pngcairo terminal)
    gnuplot-nox
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
