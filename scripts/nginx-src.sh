#!/usr/bin/env bash
# Prepare a configured copy of the nginx sources matching the system nginx, so that
# the nginx dynamic module (nginx-module/) can be built against it with ngx-rust.
#
# Idempotent: re-running reuses the configured tree unless the source or flags changed.
# Never modifies /usr/share/nginx/src.
#
# Usage: scripts/nginx-src.sh [--env]
#   prints NGINX_SOURCE_DIR=... and NGINX_BUILD_DIR=... (with --env as `export` lines)
#
# Env overrides:
#   NGINX_SYSTEM_SRC   (default /usr/share/nginx/src; Debian package nginx-dev)
#   NGINX_SRC_OUT      (default <repo>/target/nginx-src)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sys_src="${NGINX_SYSTEM_SRC:-/usr/share/nginx/src}"
out="${NGINX_SRC_OUT:-$repo_root/target/nginx-src}"

if [[ ! -x "$sys_src/configure" || ! -f "$sys_src/conf_flags" ]]; then
    echo "nginx-src.sh: $sys_src/configure or conf_flags missing; install the Debian package nginx-dev" >&2
    exit 1
fi

# shellcheck disable=SC1091
source "$sys_src/conf_flags"
if [[ ${#NGX_CONF_FLAGS[@]} -eq 0 ]]; then
    echo "nginx-src.sh: NGX_CONF_FLAGS empty in $sys_src/conf_flags" >&2
    exit 1
fi

# Stamp = flags + checksum of the source listing, to detect changes.
stamp="$(printf '%s\n' "${NGX_CONF_FLAGS[@]}"; (cd "$sys_src" && find . -type f -printf '%p %s %T@\n' | sort) | sha256sum | cut -d' ' -f1)"

if [[ -f "$out/.ingress-lb-stamp" && "$(cat "$out/.ingress-lb-stamp")" == "$stamp" \
      && -f "$out/objs/ngx_auto_config.h" && -f "$out/objs/ngx_auto_headers.h" ]]; then
    : # up to date
else
    rm -rf "$out"
    mkdir -p "$out"
    cp -a "$sys_src/." "$out/"
    (
        cd "$out"
        # configure only generates objs/ (headers + Makefile); nothing is compiled.
        ./configure "${NGX_CONF_FLAGS[@]}" >"$out/configure.log" 2>&1
    ) || { echo "nginx-src.sh: ./configure failed, see $out/configure.log" >&2; tail -n 20 "$out/configure.log" >&2; exit 1; }
    printf '%s' "$stamp" >"$out/.ingress-lb-stamp"
fi

if [[ "${1:-}" == "--env" ]]; then
    echo "export NGINX_SOURCE_DIR=$out"
    echo "export NGINX_BUILD_DIR=$out/objs"
else
    echo "NGINX_SOURCE_DIR=$out"
    echo "NGINX_BUILD_DIR=$out/objs"
fi
