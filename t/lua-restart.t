# Lua front end, restart and persistence: with
# require("ingress_lb.core").configure{ state_dir = ... } the accepted backends and
# servers documents are saved (configuration.lua, core.state_save) and, after a
# restart, loaded in init_by_lua before any worker exists (core.state_load), so
# traffic and certificates are served before the controller posts again.
#
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/lua-restart.t
#
# The runner starts a new nginx for every block: a block without a POST sees what
# the blocks before it saved. The state directory is outside the server root (which
# the runner cleans): <server root>/../ilb-state-lua-restart-<server root's name>,
# removed before the first block. The backend's endpoint listens on a port chosen
# once for the whole run (TEST_NGINX_ILB_STATE_PORT), so the saved document names a
# live endpoint in every block. Certificates are identified as in
# t/lua-certificates.t (a verifying handshake per candidate).

use lib '.';
use t::IngressLbTest 'lua';
use Test::Nginx::Socket 'no_plan';
use Cwd ();
use File::Basename ();
use File::Path ();
use IO::Socket::INET ();

master_on();
workers(2);

$ENV{TEST_NGINX_ILB_CERTS} ||= "$t::IngressLbTest::ROOT/tests/data/certs";
$ENV{TEST_NGINX_ILB_STATE_PORT} ||= do {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    $port;
};

# the state directory, fresh for this run
our $STATE = do {
    my $root = File::Spec->rel2abs(server_root());
    my $parent = Cwd::abs_path(File::Basename::dirname($root)) // die "no parent of $root";
    "$parent/ilb-state-lua-restart-" . File::Basename::basename($root);
};
$ENV{TEST_NGINX_ILB_STATE_DIR} = $STATE;
File::Path::remove_tree($STATE);

# probe name => the certificate it trusts (as t/lua-certificates.t)
my %TRUST = (default => 'default.crt', exact => 'exact.crt', static => 'static.crt');
my ($probes, $probe_init) = lua_tls_probes(%TRUST);

my $init = $probe_init . <<"_EOC_";
        certificate = require("certificate")
        STATE_DIR = "\$TEST_NGINX_ILB_STATE_DIR"
        -- the documents the controller posts in these blocks
        WEB_DOC = T.doc(T.backend("web", { { address = "127.0.0.1",
                                             port = \$TEST_NGINX_ILB_STATE_PORT } }))
        SERVERS_DOC = T.servers_doc({ ["exact.example.com"] = "uid-exact", ["_"] = "uid-default" },
                                    { ["uid-exact"] = T.pem("exact"), ["uid-default"] = T.pem("default") })
        -- "200 kept" (the endpoint's answer) for backend web, or the status
        function WEB()
            local status, body = T.get("web")
            return tostring(status) .. (status == 200 and " " .. body or "")
        end
        function SAVED(kind)
            return T.read_file(STATE_DIR .. "/" .. kind .. ".json")
        end
        -- the file's mode and the directory's, as stat prints them
        function MODES()
            local p = io.popen("stat -c %a " .. STATE_DIR .. " " .. STATE_DIR .. "/backends.json "
                               .. STATE_DIR .. "/servers.json 2>&1")
            local out = p:read("*a"):gsub("\\n", " ")
            p:close()
            return out
        end
        function FILES()
            local p = io.popen("ls -A " .. STATE_DIR .. " 2>&1")
            local out = p:read("*a"):gsub("\\n", " ")
            p:close()
            return out
        end
_EOC_

# The TLS server, as in t/lua-certificates.t; and the endpoint on the fixed port.
my $servers = <<'_EOC_';

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
    }

    server {
        listen 127.0.0.1:$TEST_NGINX_ILB_STATE_PORT;
        return 200 "kept\n";
    }
_EOC_

my $http = lua_http_config(endpoints => [qw(a)], reuseport => 1, ports => { tls => 10 },
                           init => $init) . $servers;
# state_dir is set with the library, before configuration.lua is required
$http =~ s/core\.configure\{ library = "\$TEST_NGINX_ILB_LIB" \}/core.configure{ library = "\$TEST_NGINX_ILB_LIB", state_dir = "\$TEST_NGINX_ILB_STATE_DIR" }/
    or die "lua_http_config has no core.configure{ library } line";

ilb_setup(http_config => $http, config => $probes, request => 'GET /t', timeout => 60);

run_tests();

__DATA__

=== TEST 1: nothing saved yet: nothing served; accepted documents are saved (0600, in a 0700 directory)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("files: [", FILES(), "]")
            ngx.say("before: ", WEB(), ", ", T.served("exact.example.com"))
            ngx.say("post backends: ", T.post(WEB_DOC))
            ngx.say("post servers: ", T.post_servers(SERVERS_DOC))
            ngx.sleep(0.6)  -- every worker has them (0.25 s sync)
            ngx.say("after: ", WEB(), ", ", T.served("exact.example.com"), ", ", T.served(""))
            ngx.say("saved backends: ", SAVED("backends") == WEB_DOC)
            ngx.say("saved servers: ", SAVED("servers") == SERVERS_DOC)
            ngx.say("files: [", FILES(), "]")
            ngx.say("modes: ", MODES())
        }
    }
--- response_body_like
^files: \[ls: cannot access [^\]]*\]
before: 503, static
post backends: 201 \[\]
post servers: 201 \[\]
after: 200 kept, exact, default
saved backends: true
saved servers: true
files: \[backends.json servers.json \]
modes: 700 600 600 $
--- no_error_log
[error]
[alert]



=== TEST 2: restarted without a POST: the saved documents serve from the first request, in every worker
--- config
    location = /t {
        content_by_lua_block {
            local counts = {}
            for _ = 1, 20 do
                local r = WEB()
                counts[r] = (counts[r] or 0) + 1
            end
            ngx.say("web: ", T.counts(counts))
            ngx.say("exact.example.com: ", T.served("exact.example.com"))
            ngx.say("(no SNI): ", T.served(""))
            local dict = ngx.shared.configuration_data
            ngx.say("backends_generation: ", dict:get("backends_generation"))
            ngx.say("servers_generation: ", dict:get("servers_generation"))
            ngx.say("GET backends is the saved one: ",
                    select(2, T.request_raw("GET", "/configuration/backends")) == SAVED("backends"))
            ngx.say("stock dict: ", ngx.shared.certificate_servers:get("exact.example.com"))
        }
    }
--- response_body
web: 200 kept=20
exact.example.com: exact
(no SNI): default
backends_generation: 1
servers_generation: 1
GET backends is the saved one: true
stock dict: uid-exact
--- error_log
dynamic-configuration: backends loaded from
dynamic-configuration: servers loaded from
--- no_error_log
[error]
[alert]



=== TEST 3: rejected documents are never saved; the saved ones stay and serve
--- config
    location = /t {
        content_by_lua_block {
            local backends, servers = SAVED("backends"), SAVED("servers")
            ngx.say("first request: ", WEB())
            ngx.say("bad backends: ", T.post('[{"name":"web","endpoints":[{"address":"127.0.0.1","port":"70000"}]}]'):sub(1, 3))
            ngx.say("bad servers: ", T.post_servers(T.servers_doc({ ["exact.example.com"] = "uid-x" },
                                                                  { ["uid-x"] = T.pem("bad") })):sub(1, 3))
            ngx.say("saved backends unchanged: ", SAVED("backends") == backends)
            ngx.say("saved servers unchanged: ", SAVED("servers") == servers)
            ngx.say("files: [", FILES(), "]")
            ngx.say("serving: ", WEB(), ", ", T.served("exact.example.com"))
        }
    }
--- response_body
first request: 200 kept
bad backends: 400
bad servers: 400
saved backends unchanged: true
saved servers unchanged: true
files: [backends.json servers.json ]
serving: 200 kept, exact
--- no_error_log
[error]
[alert]



=== TEST 4: the latest accepted document is the one saved
--- config
    location = /t {
        content_by_lua_block {
            local other = T.doc(T.backend("web", { T.ep("a") }), T.backend("b2", { T.ep("a") }))
            ngx.say("post: ", T.post(other))
            ngx.say("saved: ", SAVED("backends") == other)
            ngx.say("post: ", T.post(WEB_DOC))
            ngx.say("saved: ", SAVED("backends") == WEB_DOC)
            ngx.sleep(0.6)  -- every worker has it (0.25 s sync)
            ngx.say("web: ", WEB())
        }
    }
--- response_body
post: 201 []
saved: true
post: 201 []
saved: true
web: 200 kept
--- no_error_log
[error]
[alert]



=== TEST 5: state files corrupted while nginx runs: nothing changes (they are read at start only)
--- config
    location = /t {
        content_by_lua_block {
            local function write(kind, text)
                local f = assert(io.open(STATE_DIR .. "/" .. kind .. ".json", "wb"))
                f:write(text)
                f:close()
            end
            write("backends", '[{"name":"web","endpoints":[{"address":"127.0.0.1","po')
            write("servers", "\0\1 not json")
            ngx.sleep(0.6)
            ngx.say(WEB(), ", ", T.served("exact.example.com"))
        }
    }
--- response_body
200 kept, exact
--- no_error_log
[error]
[alert]



=== TEST 6: restarted with corrupt state files: nginx starts without them, says which file and why, serves after a POST
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("before: ", WEB(), ", ", T.served("exact.example.com"))
            ngx.say("post backends: ", T.post(WEB_DOC))
            ngx.say("post servers: ", T.post_servers(SERVERS_DOC))
            ngx.sleep(0.6)
            ngx.say("after: ", WEB(), ", ", T.served("exact.example.com"))
            ngx.say("saved: ", SAVED("backends") == WEB_DOC, " ", SAVED("servers") == SERVERS_DOC)
        }
    }
--- response_body
before: 503, static
post backends: 201 []
post servers: 201 []
after: 200 kept, exact
saved: true true
--- error_log eval
[qr{\[error\].*the saved backends configuration is ignored: state file \Q$::STATE\E/backends\.json: rejected: invalid JSON},
 qr{\[error\].*the saved servers configuration is ignored: state file \Q$::STATE\E/servers\.json: rejected: invalid servers JSON}]
--- no_error_log
[alert]



=== TEST 7: and after a restart the documents posted since serve again
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(WEB(), ", ", T.served("exact.example.com"))
            -- for the next block: a plain file where the directory was
            os.execute("rm -rf " .. STATE_DIR .. " && touch " .. STATE_DIR)
        }
    }
--- response_body
200 kept, exact
--- no_error_log
[error]
[alert]



=== TEST 8: a state directory that cannot be used: nginx starts, POSTs are still accepted, each failure is logged
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("before: ", WEB())
            ngx.say("post: ", T.post(WEB_DOC))
            ngx.sleep(0.6)
            ngx.say("after: ", WEB())
        }
    }
--- response_body
before: 503
post: 201 []
after: 200 kept
--- error_log eval
[qr{\[error\].*the saved backends configuration is ignored: state file \Q$::STATE\E/backends\.json: Not a directory},
 qr{\[error\].*could not save the backends configuration: state file \Q$::STATE\E/backends\.json: }]
--- no_error_log
[alert]
