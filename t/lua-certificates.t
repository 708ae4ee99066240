# Lua front end, certificates by SNI (lua/certificate.lua, POST /configuration/servers
# in lua/configuration.lua) against the real core library, in nginx with
# lua-nginx-module: real TLS handshakes on loopback.
#
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/lua-certificates.t
#
# Environment (defaults in t/IngressLbTest.pm when unset): TEST_NGINX_BINARY,
# TEST_NGINX_LOAD_MODULES, TEST_NGINX_ILB_LUA_DIR, TEST_NGINX_ILB_LIB,
# TEST_NGINX_ILB_TEST_LIB; and TEST_NGINX_ILB_CERTS, the test certificates
# (default tests/data/certs, made by scripts/gen-test-certs.sh).
#
# Which certificate the TLS server presented is found out independently of the
# code under test: the default server has a location /tls-probe/<name> per test
# certificate whose lua_ssl_trusted_certificate is that certificate only (the CA
# for "chain"); each makes a handshake with the TLS server verifying the chain,
# and T.served(sni) lists the names whose probe verified (exact and exact-v2 share
# their subject and names, only their keys differ). The probes' own log (failed
# verifications are logged at [error]) is logs/tls-probe.log.

use lib '.';
use t::IngressLbTest 'lua';
use Test::Nginx::Socket 'no_plan';

master_on();
workers(2);

$ENV{TEST_NGINX_ILB_CERTS} ||= "$t::IngressLbTest::ROOT/tests/data/certs";

# probe name => the certificate it trusts
my %TRUST = (
    chain => 'ca.crt', default => 'default.crt', exact => 'exact.crt',
    'exact-v2' => 'exact-v2.crt', other => 'other.crt', static => 'static.crt',
    wildcard => 'wildcard.crt', 'wildcard-top' => 'wildcard-top.crt',
);
my ($probes, $probe_init) = lua_tls_probes(%TRUST);

my $init = $probe_init . <<"_EOC_";
        certificate = require("certificate")
        -- a block with the user file "ocsp-on": as nginx.tmpl with enable-ocsp
        local f = io.open(ngx.config.prefix() .. "html/ocsp-on")
        if f then
            f:close()
            certificate.is_ocsp_stapling_enabled = true
        end
_EOC_

# The TLS server, wired like ingress-nginx's nginx.tmpl: a static (fake)
# certificate, and certificate.call() choosing by SNI. It answers its worker's pid
# and the SNI; /cert-stats the answering worker's certificate cache;
# /configured certificate.configured_for_current_request() for the Host header.
my $tls_server = <<'_EOC_';

    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_10 ssl reuseport;
        server_name _;

        ssl_certificate $TEST_NGINX_ILB_CERTS/static.crt;
        ssl_certificate_key $TEST_NGINX_ILB_CERTS/static.key;
        ssl_certificate_by_lua_block {
            certificate.call()
        }

        location / {
            return 200 "pid=$pid sni=$ssl_server_name\n";
        }

        location = /cert-stats {
            content_by_lua_block {
                local s = certificate.cache_stats()
                ngx.say("pid=", ngx.worker.pid(), " size=", s.size, " parsed=", s.parsed,
                        " pruned=", s.pruned)
            }
        }

        location = /configured {
            content_by_lua_block {
                ngx.say(certificate.configured_for_current_request())
            }
        }
    }
_EOC_

ilb_setup(http_config => lua_http_config(endpoints => [qw(a b)], config_body_buffer => '8k',
                                         reuseport => 1, ports => { tls => 10 },
                                         init => $init) . $tls_server,
          config => $probes,
          request => 'GET /t', timeout => 60);

run_tests();

__DATA__

=== TEST 1: before any POST the static ssl_certificate answers
--- config
    location = /t {
        content_by_lua_block {
            for _, sni in ipairs({ "exact.example.com", "" }) do
                ngx.say(sni == "" and "(no SNI)" or sni, ": ", T.served(sni))
            end
        }
    }
--- response_body
exact.example.com: static
(no SNI): static
--- no_error_log
[error]
[alert]



=== TEST 2: exact name, one-label wildcard, default for the rest; names as stock normalises them
--- config
    location = /t {
        content_by_lua_block {
            local doc = T.servers_doc({
                ["exact.example.com"] = "uid-exact",
                ["*.b.example.com"] = "uid-wildcard",
                ["_"] = "uid-default",
            }, {
                ["uid-exact"] = T.pem("exact"),
                ["uid-wildcard"] = T.pem("wildcard"),
                ["uid-default"] = T.pem("default"),
            })
            ngx.say("post: ", T.post_servers(doc))
            for _, sni in ipairs({ "exact.example.com", "a.b.example.com",
                                   "x.a.b.example.com", "b.example.com",
                                   "unknown.example.org", "", "EXACT.Example.COM",
                                   "exact.example.com.", "A.B.example.com." }) do
                ngx.say(sni == "" and "(no SNI)" or sni, ": ", T.served(sni))
            end
        }
    }
--- response_body
post: 201 []
exact.example.com: exact
a.b.example.com: wildcard
x.a.b.example.com: default
b.example.com: default
unknown.example.org: default
(no SNI): default
EXACT.Example.COM: exact
exact.example.com.: exact
A.B.example.com.: wildcard
--- no_error_log
[error]
[alert]



=== TEST 3: the nearest wildcard wins; without "_" unmatched names get the static certificate
--- config
    location = /t {
        content_by_lua_block {
            local doc = T.servers_doc({
                ["*.b.example.com"] = "uid-wildcard",
                ["*.example.com"] = "uid-top",
                ["chain.example.com"] = "uid-chain",
            }, {
                ["uid-wildcard"] = T.pem("wildcard"),
                ["uid-top"] = T.pem("wildcard-top"),
                ["uid-chain"] = T.pem("chain"),
            })
            ngx.say("post: ", T.post_servers(doc))
            for _, sni in ipairs({ "a.b.example.com", "b.example.com", "c.example.com",
                                   "x.a.b.example.com", "chain.example.com",
                                   "example.com", "unknown.example.org", "" }) do
                ngx.say(sni == "" and "(no SNI)" or sni, ": ", T.served(sni))
            end
        }
    }
--- response_body
post: 201 []
a.b.example.com: wildcard
b.example.com: wildcard-top
c.example.com: wildcard-top
x.a.b.example.com: static
chain.example.com: chain
example.com: static
unknown.example.org: static
(no SNI): static
--- no_error_log
[error]
[alert]



=== TEST 4: "-1" and absence from the latest POST: no longer served (the default answers)
--- config
    location = /t {
        content_by_lua_block {
            local certs = {
                ["uid-exact"] = T.pem("exact"),
                ["uid-wildcard"] = T.pem("wildcard"),
                ["uid-other"] = T.pem("other"),
                ["uid-default"] = T.pem("default"),
            }
            local names = { "exact.example.com", "a.b.example.com", "other.example.com" }
            local function show(label)
                local out = {}
                for i, sni in ipairs(names) do
                    out[i] = sni .. "=" .. T.served(sni)
                end
                ngx.say(label, ": ", table.concat(out, " "))
            end
            ngx.say("post: ", T.post_servers(T.servers_doc({
                ["exact.example.com"] = "uid-exact",
                ["*.b.example.com"] = "uid-wildcard",
                ["other.example.com"] = "uid-other",
                ["_"] = "uid-default",
            }, certs)))
            show("all")
            -- exact: "-1"; other: absent (its certificate still listed)
            ngx.say("post: ", T.post_servers(T.servers_doc({
                ["exact.example.com"] = "-1",
                ["*.b.example.com"] = "uid-wildcard",
                ["_"] = "uid-default",
            }, certs)))
            show("after")
            -- and back
            ngx.say("post: ", T.post_servers(T.servers_doc({
                ["exact.example.com"] = "uid-exact",
                ["other.example.com"] = "uid-other",
            }, certs)))
            show("again")
        }
    }
--- response_body
post: 201 []
all: exact.example.com=exact a.b.example.com=wildcard other.example.com=other
post: 201 []
after: exact.example.com=default a.b.example.com=wildcard other.example.com=default
post: 201 []
again: exact.example.com=exact a.b.example.com=static other.example.com=other
--- no_error_log
[error]
[alert]



=== TEST 5: rejected documents: 400 with the core's message, nothing stored, the old certificates serve
--- config
    location = /t {
        content_by_lua_block {
            local dict = ngx.shared.configuration_data
            local good = T.servers_doc({
                ["exact.example.com"] = "uid-exact",
                ["_"] = "uid-default",
            }, { ["uid-exact"] = T.pem("exact"), ["uid-default"] = T.pem("default") })
            ngx.say("post: ", T.post_servers(good))
            local function bad(label, pem_name, hostname)
                local doc = T.servers_doc({
                    [hostname or "exact.example.com"] = "uid-new",
                    ["_"] = "uid-default",
                }, { ["uid-new"] = pem_name and T.pem(pem_name) or 42,
                     ["uid-default"] = T.pem("default") })
                ngx.say(label, ": ", T.post_servers(doc))
            end
            bad("bad PEM", "bad")
            bad("key mismatch", "mismatched")
            bad("key only", "keyonly")
            bad("not a string", nil)
            bad("bad hostname", "other", "not a hostname!")
            ngx.say("bad JSON: ", T.post_servers('{"servers":{"exact.example.com":'))
            ngx.say("unknown uid: ", T.post_servers(T.servers_doc(
                { ["exact.example.com"] = "uid-missing" }, {})))
            ngx.say("empty: ", T.post_servers(""))
            ngx.say("generation: ", dict:get("servers_generation"))
            ngx.say("stored unchanged: ", dict:get("servers") == good)
            ngx.say("exact.example.com: ", T.served("exact.example.com"))
            ngx.say("(no SNI): ", T.served(""))
        }
    }
--- response_body_like
^post: 201 \[\]
bad PEM: 400 \[certificate "uid-new": PEM certificates do not parse[^\]]*\]
key mismatch: 400 \[certificate "uid-new": the private key does not match[^\]]*\]
key only: 400 \[certificate "uid-new": [^\]]+\]
not a string: 400 \[certificate "uid-new": expected the PEM text[^\]]*\]
bad hostname: 400 \[server "not a hostname!": [^\]]+\]
bad JSON: 400 \[invalid servers JSON: [^\]]+\]
unknown uid: 400 \[server "exact.example.com": no certificate with uid "uid-missing"[^\]]*\]
empty: 400 \[[^\]]*\]
generation: 1
stored unchanged: true
exact.example.com: exact
\(no SNI\): default
--- error_log
dynamic-configuration: servers rejected: certificate "uid-new": PEM certificates do not parse
--- no_error_log
[error]
[alert]
[crit]



=== TEST 6: new content for a hostname (same uid, then a new uid) is served at once
--- config
    location = /t {
        content_by_lua_block {
            local function post(uid, pem)
                return T.post_servers(T.servers_doc({
                    ["exact.example.com"] = uid,
                    ["_"] = "uid-default",
                }, { [uid] = T.pem(pem), ["uid-default"] = T.pem("default") }))
            end
            ngx.say("post v1: ", post("uid-exact", "exact"))
            ngx.say("v1: ", T.served("exact.example.com"))
            ngx.shared.ocsp_response_cache:set("uid-exact", "stale")
            ngx.say("post v2 (same uid): ", post("uid-exact", "exact-v2"))
            ngx.say("v2: ", T.served("exact.example.com"))
            ngx.say("OCSP response of v1: ",
                    tostring(ngx.shared.ocsp_response_cache:get("uid-exact")))
            ngx.say("post v1 (new uid): ", post("uid-exact-2", "exact"))
            ngx.say("v1: ", T.served("exact.example.com"))
        }
    }
--- response_body
post v1: 201 []
v1: exact
post v2 (same uid): 201 []
v2: exact-v2
OCSP response of v1: nil
post v1 (new uid): 201 []
v1: exact
--- no_error_log
[error]
[alert]



=== TEST 7: both workers serve a newly POSTed certificate
--- config
    location = /t {
        content_by_lua_block {
            local function post(pem)
                return T.post_servers(T.servers_doc({ ["exact.example.com"] = "uid-exact" },
                                                    { ["uid-exact"] = T.pem(pem) }))
            end
            -- handshakes (full verification against `probe`) until two workers
            -- answered; "<workers> <other outcomes>"
            local function workers(probe)
                local pids, other, n = {}, {}, 0
                for _ = 1, 60 do
                    local _, body = T.request("GET", "/tls-probe/" .. probe
                                              .. "?sni=exact.example.com", nil, nil,
                                              tonumber(ngx.var.server_port))
                    local pid = body:match("^trusted pid=(%d+)")
                    if pid then
                        if not pids[pid] then
                            pids[pid] = true
                            n = n + 1
                        end
                    else
                        other[body] = true
                    end
                    if n >= 2 then
                        break
                    end
                end
                return n .. " workers" .. (next(other) and " and others" or "")
            end
            ngx.say("post: ", post("exact"))
            ngx.say("exact: ", workers("exact"))
            ngx.say("post: ", post("exact-v2"))
            ngx.say("exact-v2: ", workers("exact-v2"))
        }
    }
--- response_body
post: 201 []
exact: 2 workers
post: 201 []
exact-v2: 2 workers
--- no_error_log
[error]
[alert]



=== TEST 8: GET /configuration/certs?hostname= answers from the stock dicts, as stock
--- config
    location = /t {
        content_by_lua_block {
            local pem = T.pem("exact")
            local certs = { ["uid-exact"] = pem, ["uid-other"] = T.pem("other") }
            local function get(hostname)
                local status, body = T.request_raw("GET",
                    "/configuration/certs?hostname=" .. hostname)
                if body == pem then
                    body = "<exact.pem>"
                elseif body == certs["uid-other"] then
                    body = "<other.pem>"
                end
                return status .. " [" .. tostring(body) .. "]"
            end
            ngx.say("post: ", T.post_servers(T.servers_doc({
                ["exact.example.com"] = "uid-exact",
                ["other.example.com"] = "uid-other",
                ["*.b.example.com"] = "uid-exact",
            }, certs)))
            ngx.say("exact: ", get("exact.example.com"))
            ngx.say("wildcard entry: ", get("*.b.example.com"))
            ngx.say("name under it: ", get("a.b.example.com"))
            ngx.say("other: ", get("other.example.com"))
            -- exact: "-1" (deleted, as stock); other: absent (stock keeps it)
            ngx.say("post: ", T.post_servers(T.servers_doc({
                ["exact.example.com"] = "-1",
            }, certs)))
            ngx.say("exact: ", get("exact.example.com"))
            ngx.say("other: ", get("other.example.com"))
            ngx.say("other served: ", T.served("other.example.com"))
            ngx.say("certificate_data: ",
                    ngx.shared.certificate_data:get("uid-exact") == pem)
        }
    }
--- response_body
post: 201 []
exact: 200 [<exact.pem>]
wildcard entry: 200 [<exact.pem>]
name under it: 404 [No key associated with this hostname.]
other: 200 [<other.pem>]
post: 201 []
exact: 404 [No key associated with this hostname.]
other: 200 [<other.pem>]
other served: static
certificate_data: true
--- no_error_log
[error]
[alert]



=== TEST 9: each certificate is parsed once per worker and dropped when no hostname uses it
--- config
    location = /t {
        content_by_lua_block {
            local certs = { ["uid-exact"] = T.pem("exact"), ["uid-default"] = T.pem("default") }
            -- the answering workers' cache lines after n handshakes with `sni`
            local function stats(n, sni)
                local seen, lines = {}, {}
                for _ = 1, n do
                    local status, body = T.tls_get(sni, "/cert-stats")
                    body = status == 200 and body:gsub("^pid=%d+ ", "") or tostring(body)
                    if not seen[body] then
                        seen[body] = true
                        lines[#lines + 1] = body
                    end
                end
                table.sort(lines)
                return table.concat(lines, " | ")
            end
            ngx.say("post: ", T.post_servers(T.servers_doc({
                ["exact.example.com"] = "uid-exact",
            }, certs)))
            ngx.say("exact x20: ", stats(20, "exact.example.com"))
            -- exact.example.com is gone: its worker drops it, "_" is parsed
            ngx.say("post: ", T.post_servers(T.servers_doc({
                ["_"] = "uid-default",
            }, certs)))
            ngx.say("after x20: ", stats(20, "exact.example.com"))
        }
    }
--- response_body_like
^post: 201 \[\]
exact x20: size=1 parsed=1 pruned=0
post: 201 \[\]
after x20: size=1 parsed=(?:1 pruned=0|2 pruned=1)(?: \| size=1 parsed=(?:1 pruned=0|2 pruned=1))?
--- no_error_log
[error]
[alert]



=== TEST 10: configured_for_current_request(): a certificate of the host's own (the default's included), as stock
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", T.post_servers(T.servers_doc({
                ["exact.example.com"] = "uid-exact",
                ["*.b.example.com"] = "uid-wildcard",
                ["gone.example.com"] = "-1",
                ["plain.example.com"] = "uid-default",
                ["_"] = "uid-default",
            }, {
                ["uid-exact"] = T.pem("exact"),
                ["uid-wildcard"] = T.pem("wildcard"),
                ["uid-default"] = T.pem("default"),
            })))
            for _, host in ipairs({ "exact.example.com", "a.b.example.com",
                                    "x.a.b.example.com", "gone.example.com",
                                    "plain.example.com", "unknown.example.org" }) do
                local _, body = T.tls_get("exact.example.com", "/configured",
                                          { Host = host })
                ngx.say(host, ": ", body)
            end
        }
    }
--- response_body
post: 201 []
exact.example.com: true
a.b.example.com: true
x.a.b.example.com: false
gone.example.com: false
plain.example.com: true
unknown.example.org: false
--- no_error_log
[error]
[alert]



=== TEST 11: 10 000 certificates (about 9 MB of JSON): accepted, and any of them served
--- config
    location = /t {
        content_by_lua_block {
            local pems = { T.pem("exact"), T.pem("other"), T.pem("wildcard"), T.pem("default") }
            local names = { "exact", "other", "wildcard", "default" }
            local servers, certs = {}, {}
            for i = 1, 10000 do
                local uid = "uid-" .. i
                servers["host-" .. i .. ".example.net"] = uid
                certs[uid] = pems[i % 4 + 1]
            end
            servers["_"] = "uid-1"
            local doc = T.servers_doc(servers, certs)
            ngx.say("size > 9 MB: ", #doc > 9 * 1000 * 1000)
            ngx.update_time()
            local t0 = ngx.now()
            ngx.say("post: ", T.post_servers(doc))
            ngx.update_time()
            ngx.log(ngx.NOTICE, "POST of ", #doc, " bytes took ", ngx.now() - t0, " s")
            for _, i in ipairs({ 1, 2, 9999, 10000 }) do
                ngx.say(i, ": ", T.served("host-" .. i .. ".example.net"),
                        " (expected ", names[i % 4 + 1], ")")
            end
            ngx.say("unknown: ", T.served("unknown.example.net"))
            -- the same document again: unchanged
            ngx.say("again: ", T.post_servers(doc))
            ngx.say("generation: ", ngx.shared.configuration_data:get("servers_generation"))
        }
    }
--- response_body
size > 9 MB: true
post: 201 []
1: other (expected other)
2: wildcard (expected wildcard)
9999: default (expected default)
10000: exact (expected exact)
unknown: other
again: 201 []
generation: 2
--- error_log
a client request body is buffered to a temporary file
--- no_error_log
[error]
[alert]



=== TEST 12: OCSP stapling asked for: said once at start-up, certificates served without it
--- user_files
>>> ocsp-on
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("post: ", T.post_servers(T.servers_doc({ ["_"] = "uid-default" },
                                                           { ["uid-default"] = T.pem("default") })))
            ngx.say("served: ", T.served("exact.example.com"))
        }
    }
--- response_body
post: 201 []
served: default
--- grep_error_log eval: qr/OCSP stapling is enabled[^,]*/
--- grep_error_log_out
OCSP stapling is enabled (certificate.is_ocsp_stapling_enabled) but ingress-lb does not staple OCSP responses yet: certificates are served without them
--- no_error_log
[error]
[alert]
