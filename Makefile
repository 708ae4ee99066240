# ingress-lb — the two commands a newcomer needs:
#   make run    set up, build, start the demo gateway (module on :8080, Lua on :8081)
#   make test   set up, build, run every test (cargo test + Test::Nginx suites, both front ends)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

NGINX        ?= /usr/sbin/nginx
NGX_MODULES  ?= /usr/lib/nginx/modules
RELEASE      := $(CURDIR)/target/release
LIB          := $(RELEASE)/libingress_lb.so
MODULE       := $(RELEASE)/ngx_http_ingress_lb_module.so
LUA_MODULES  := $(NGX_MODULES)/ndk_http_module.so $(NGX_MODULES)/ngx_http_lua_module.so

# prove runs the suites with the real Test::Nginx when it is installed, else with the
# bundled compatible runner (t/compat), which is only appended to @INC of each test.
PROVE        := HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove
SUITE_ENV    := TEST_NGINX_BINARY=$(NGINX) TEST_NGINX_ILB_LUA_DIR=$(CURDIR)/lua TEST_NGINX_ILB_LIB=$(LIB)

.PHONY: all setup build lib module test test-rust test-nginx test-lua test-module run bench lint clean

all: build

setup:
	@scripts/setup.sh

build: lib module

lib:
	cargo build --release --lib

# The module is built against a configured copy of Debian's nginx sources (same
# version and configure flags as /usr/sbin/nginx); see README "Building the module".
module:
	eval "$$(scripts/nginx-src.sh --env)" && cargo build --release -p ngx-http-ingress-lb-module
	cp $(RELEASE)/libngx_http_ingress_lb_module.so $(MODULE)

# CI (.ci/run): everything, plus the short stress run and a fuzzing smoke run.
test: setup build test-rust test-nginx stress-short fuzz-smoke

test-rust:
	cargo test

test-nginx: test-lua test-module

test-lua:
	$(SUITE_ENV) TEST_NGINX_LOAD_MODULES="$(LUA_MODULES)" $(PROVE) t/compat/*.t t/lua-*.t

# Module suites may load the Lua module too, only as a test driver (counting responses).
test-module:
	$(SUITE_ENV) TEST_NGINX_LOAD_MODULES="$(LUA_MODULES) $(MODULE)" $(PROVE) t/module-*.t

run: setup build
	scripts/demo.sh

# The criterion suite and the heap-use tables; criterion options after `--`, e.g.
# make bench ARGS='-- --warm-up-time 1 --measurement-time 3' (or a filter: ARGS='-- pick/ewma').
bench:
	cargo bench --bench suite --bench memory $(ARGS)

lint:
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
	eval "$$(scripts/nginx-src.sh --env)" && cargo clippy -p ngx-http-ingress-lb-module -- -D warnings

clean:
	cargo clean
	rm -rf t/servroot

# Reload and churn under load, both front ends (scripts/stress.sh, README "Reliability"):
# reloads, endpoint churn, graceful quit, 10 000 updates, a killed worker.
.PHONY: stress stress-short
stress: build
	LIB=$(LIB) MODULE=$(MODULE) NGINX=$(NGINX) scripts/stress.sh

# The same in under a minute (durations / 5), for CI.
stress-short: build
	STRESS_SHORT=1 LIB=$(LIB) MODULE=$(MODULE) NGINX=$(NGINX) scripts/stress.sh

# Fuzzing (cargo-fuzz, nightly; scripts/fuzz.sh, README "Fuzzing"): every target for
# FUZZ_SECONDS each; crashes land in target/fuzz-work/<target>/artifacts/.
.PHONY: fuzz fuzz-smoke
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} scripts/fuzz.sh

# 10 s per target after the build, for CI.
fuzz-smoke:
	FUZZ_SECONDS=10 scripts/fuzz.sh

# End-to-end performance against native nginx (benches/e2e/run.py, README "End to end,
# against native nginx"): the module and the Lua gateway vs nginx's own upstreams, wrk
# load; about 11 minutes; results in benches/e2e/results/ and the README. QUICK=1: one
# round of 2 s runs (checks the harness works). E2E_ARGS: e.g. --only throughput.
.PHONY: bench-e2e
bench-e2e: build
	LIB=$(LIB) MODULE=$(MODULE) NGINX=$(NGINX) QUICK=$(QUICK) benches/e2e/run.py $(E2E_ARGS)
