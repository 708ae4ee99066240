# nginx module, restart and persistence: with `ingress_lb_state_path DIR;` the
# accepted backends and servers documents are saved by the configuration endpoint
# and, after a restart, stored in the shared zones by the master before any worker
# exists (init_module), so traffic and certificates are served before the
# controller posts again.
#
#   make module
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so \
#     /usr/lib/nginx/modules/ngx_http_lua_module.so $PWD/target/release/ngx_http_ingress_lb_module.so" \
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/module-restart.t
#
# The same blocks as t/lua-restart.t (the lua module only drives the tests: every
# decision is the module's). The runner starts a new nginx for every block: a block
# without a POST sees what the blocks before it saved. The state directory is
# outside the server root (which the runner cleans):
# <server root>/../ilb-state-module-restart-<server root's name>, removed before
# the first block. The backend's endpoint listens on a port chosen once for the
# whole run (TEST_NGINX_ILB_STATE_PORT). Certificates are identified as in
# t/lua-certificates.t (a verifying handshake per candidate).

use lib '.';
use t::IngressLbTest 'module';
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
    "$parent/ilb-state-module-restart-" . File::Basename::basename($root);
};
$ENV{TEST_NGINX_ILB_STATE_DIR} = $STATE;
File::Path::remove_tree($STATE);

# probe name => the certificate it trusts (as t/lua-certificates.t)
my %TRUST = (default => 'default.crt', exact => 'exact.crt', static => 'static.crt');
my @CANDIDATES = sort keys %TRUST;

my $probes = join '', map { <<"_EOC_" } @CANDIDATES;
    location = /tls-probe/$_ {
        lua_ssl_trusted_certificate \$TEST_NGINX_ILB_CERTS/$TRUST{$_};
        lua_ssl_verify_depth 2;
        error_log logs/tls-probe.log info;
        content_by_lua_block {
            ngx.say(T.tls_probe(T.PORTS.tls, ngx.var.arg_sni))
        }
    }
_EOC_

my $candidates = join ', ', map { "\"$_\"" } @CANDIDATES;

my $init = <<"_EOC_";
        T.CERTS = "\$TEST_NGINX_ILB_CERTS"
        T.TLS_CANDIDATES = { $candidates }
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

# The TLS server, as t/module-certificates.t's (the module chooses by SNI); the
# endpoint on the fixed port; the state directory and the servers zone.
my $servers = <<'_EOC_';

    ingress_lb_state_path $TEST_NGINX_ILB_STATE_DIR;
    ingress_lb_servers_zone 1m;

    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_10 ssl reuseport;
        server_name _;

        ssl_certificate $TEST_NGINX_ILB_CERTS/static.crt;
        ssl_certificate_key $TEST_NGINX_ILB_CERTS/static.key;
        ingress_lb_certificate on;

        location / {
            return 200 "pid=$pid sni=$ssl_server_name\n";
        }
    }

    server {
        listen 127.0.0.1:$TEST_NGINX_ILB_STATE_PORT;
        return 200 "kept\n";
    }
_EOC_

ilb_setup(http_config => module_http_config(reuseport => 1, ports => { tls => 10 }, init => $init)
                         . $servers,
          config => $probes, request => 'GET /t', timeout => 60);

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
            ngx.say("GET backends is the saved one: ",
                    select(2, T.request_raw("GET", "/configuration/backends")) == SAVED("backends"))
            local status, pem = T.request_raw("GET", "/configuration/certs?hostname=exact.example.com")
            ngx.say("GET certs: ", status, " ", pem == T.pem("exact"))
        }
    }
--- response_body
web: 200 kept=20
exact.example.com: exact
(no SNI): default
GET backends is the saved one: true
GET certs: 200 true
--- error_log eval
[qr{\[notice\].*ingress_lb: backends configuration \(\d+ bytes\) loaded from \Q$::STATE\E},
 qr{\[notice\].*ingress_lb: servers configuration \(\d+ bytes\) loaded from \Q$::STATE\E}]
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
[qr{\[error\].*ingress_lb: state file \Q$::STATE\E/backends\.json: rejected: invalid JSON.*; the saved backends configuration is ignored},
 qr{\[error\].*ingress_lb: state file \Q$::STATE\E/servers\.json: rejected: invalid servers JSON.*; the saved servers configuration is ignored}]
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
            ngx.say("after: ", WEB())
        }
    }
--- response_body
before: 503
post: 201 []
after: 200 kept
--- error_log eval
[qr{\[error\].*ingress_lb: state file \Q$::STATE\E/backends\.json: Not a directory.*; the saved backends configuration is ignored},
 qr{\[error\].*ingress_lb: could not save the backends configuration: state file \Q$::STATE\E/backends\.json: }]
--- no_error_log
[alert]
