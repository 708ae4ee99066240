package t::IngressLbTest;

# What the Test::Nginx::Socket suites t/lua-*.t and t/module-*.t share: the
# environment defaults, the http{} configuration of each front end (the ingress
# server wired like ingress-nginx's nginx.tmpl, the endpoints, and the Lua test
# helpers of t/lib/ilb_test.lua loaded as the global T) and the block
# preprocessing. Each suite loads it before Test::Nginx::Socket (which reads
# TEST_NGINX_LOAD_MODULES when it is loaded), from the repository root:
#
#     use lib '.';
#     use t::IngressLbTest 'lua';      # or 'module'
#     use Test::Nginx::Socket 'no_plan';
#     ...
#     our $HttpConfig = lua_http_config(...) . <<'_EOC_';
#         # the suite's own servers
#     _EOC_
#     ilb_setup(http_config => $HttpConfig, request => 'GET /t', timeout => 20);
#
#     run_tests();
#
# It only writes configuration text and sets environment variables: it works
# with the real Test::Nginx (openresty/test-nginx) as with t/compat's runner.
#
# Environment defaults (an environment variable that is set wins), paths from
# this file's location:
#   TEST_NGINX_ILB_LUA_DIR    lua/ (the Lua front end)
#   TEST_NGINX_ILB_LIB        target/release/libingress_lb.so (the core library)
#   TEST_NGINX_ILB_TEST_LIB   t/lib/ (the Lua test helpers, ilb_test.lua)
#   TEST_NGINX_LOAD_MODULES   'lua': Debian's ndk and lua modules.
#                             'module': also the module built in this tree
#                             (target/release/ngx_http_ingress_lb_module.so), and
#                             the lua modules, which only drive the tests, when
#                             they are installed; the import option
#                             'no_lua_driver' leaves them out. A suite whose
#                             modules are missing is skipped.

use strict;
use warnings;

use Cwd ();
use File::Basename ();
use File::Spec ();

# the repository root: this file is t/IngressLbTest.pm
our $ROOT = Cwd::abs_path(
    File::Spec->catdir(File::Basename::dirname(File::Spec->rel2abs(__FILE__)), '..'));

our @EXPORT = qw(ilb_setup ilb_preprocess lua_http_config module_http_config
                 module_base_http_config endpoint_servers lua_tls_probes);

my @LUA_MODULES = map { "/usr/lib/nginx/modules/$_" } qw(ndk_http_module.so ngx_http_lua_module.so);

sub import {
    my ($class, $front, @options) = @_;
    my %option = map { $_ => 1 } @options;
    $front //= '';
    die "use t::IngressLbTest 'lua' or 'module'\n" unless $front =~ /^(?:lua|module)$/;

    $ENV{TEST_NGINX_ILB_LUA_DIR} ||= "$ROOT/lua";
    $ENV{TEST_NGINX_ILB_LIB} ||= "$ROOT/target/release/libingress_lb.so";
    $ENV{TEST_NGINX_ILB_TEST_LIB} ||= "$ROOT/t/lib";

    if ($front eq 'lua') {
        $ENV{TEST_NGINX_LOAD_MODULES} ||= join ' ', @LUA_MODULES;
    } else {
        module_defaults(!$option{no_lua_driver});
    }

    my $caller = caller;
    no strict 'refs';
    *{"${caller}::$_"} = \&{$_} for @EXPORT;
}

# The module front end: TEST_NGINX_LOAD_MODULES, else (for each part it does not
# name) Debian's lua modules when they exist and the module built in this tree.
# Without the module (or the lua modules, when the suite needs them as its
# driver) the suite is skipped.
sub module_defaults {
    my ($lua_driver) = @_;
    my @mods = grep { length } split /\s+/, $ENV{TEST_NGINX_LOAD_MODULES} // '';
    if ($lua_driver && !grep { /ngx_http_lua_module/ } @mods) {
        unshift @mods, @LUA_MODULES unless grep { !-f $_ } @LUA_MODULES;
    }
    if (!grep { /ngx_http_ingress_lb_module/ } @mods) {
        for my $so (map { "$ROOT/target/release/$_" }
                    qw(ngx_http_ingress_lb_module.so libngx_http_ingress_lb_module.so)) {
            if (-f $so) { push @mods, $so; last }
        }
    }
    $ENV{TEST_NGINX_LOAD_MODULES} = join ' ', @mods;

    my $skip;
    if ($ENV{TEST_NGINX_LOAD_MODULES} !~ /ngx_http_ingress_lb_module/) {
        $skip = 'set TEST_NGINX_LOAD_MODULES to the absolute path of ngx_http_ingress_lb_module.so';
    } elsif ($lua_driver && $ENV{TEST_NGINX_LOAD_MODULES} !~ /ngx_http_lua_module/) {
        $skip = 'the lua module (test driver only) is not available';
    }
    if ($skip) {
        require Test::More;
        Test::More::plan(skip_all => $skip);
    }
}

# $TEST_NGINX_RAND_PORT_<n> of the named ports: the endpoints "a" to "d" (each
# answers its letter), "dead" and "dead2" (nothing listens) and the ingress
# server "front"
my %PORT = (a => 1, b => 2, c => 3, dead => 4, front => 5, dead2 => 6, d => 7);

sub port { "\$TEST_NGINX_RAND_PORT_$_[0]" }

# a server for each named endpoint: it answers its name
sub endpoint_servers {
    return join '', map {
        "    server { listen 127.0.0.1:" . port($PORT{$_}) . "; return 200 \"$_\\n\"; }\n"
    } @_;
}

# Endpoints that answer their name after a while ("slow" after 0.15 s, "slower"
# after 0.3 s: their ewma scores), on $TEST_NGINX_RAND_PORT_8 and _9
my %SLOW_PORT = (slow => 8, slower => 9);

sub slow_endpoint_servers {
    return <<'_EOC_';
    # slow endpoints: the score of the first is about 0.15 s, of the second 0.3 s
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_8;
        location / {
            content_by_lua_block {
                ngx.sleep(0.15)
                ngx.say("slow")
            }
        }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_9;
        location / {
            content_by_lua_block {
                ngx.sleep(0.3)
                ngx.say("slower")
            }
        }
    }
_EOC_
}

# init_by_lua code: T (t/lib/ilb_test.lua) with the ingress server's port and
# T.PORTS: the endpoints, "dead", "dead2", the slow endpoints (option
# slow_endpoints) and `ports` (name => n of $TEST_NGINX_RAND_PORT_<n>)
sub t_setup {
    my ($endpoints, %opt) = @_;
    my $extra = { %{ $opt{ports} // {} }, $opt{slow_endpoints} ? %SLOW_PORT : () };
    my $text = "        T = require(\"ilb_test\")\n"
        . "        T.setup(" . port($PORT{front}) . ", {\n";
    $text .= "            $_ = " . port($PORT{$_}) . ",\n" for @$endpoints;
    $text .= "            -- nothing listens on these\n";
    $text .= "            $_ = " . port($PORT{$_}) . ",\n" for qw(dead dead2);
    $text .= "            $_ = " . port($extra->{$_}) . ",\n" for sort keys %$extra;
    return $text . "        })\n";
}

# the template with its @@NAME@@ replaced by $value{NAME}; a line that is only
# @@NAME@@ stands for lines of text (the value, each line ending in a newline)
sub fill {
    my ($template, %value) = @_;
    $template =~ s/^\@\@(\w+)\@\@\n/$value{$1} \/\/ die "no value for $1"/gme;
    $template =~ s/\@\@(\w+)\@\@/$value{$1} \/\/ die "no value for $1"/ge;
    return $template;
}

# The ingress server, wired like ingress-nginx's nginx.tmpl: the proxy location
# (per-location $location_path, $balancer_ewma_score, $proxy_upstream_name from
# the X-Backend request header; `route` before proxying, `log` after) and
# /configuration (`configuration` handles it, `body_buffer` its
# client_body_buffer_size, default 21m), `locations` more locations; `reuseport`
# on the listen socket.
sub ingress_server {
    my %p = @_;
    return fill(<<'_EOC_',
    # the ingress server, wired like ingress-nginx's nginx.tmpl
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_5@@REUSEPORT@@;

        location / {
            set $location_path "/";
            set $balancer_ewma_score -1;
            set $proxy_upstream_name $http_x_backend;
            set $proxy_alternative_upstream_name "";
@@ROUTE@@
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;

            add_header X-Upstream-Addr $upstream_addr always;
            add_header X-Worker-Pid $pid always;
            add_header X-Ewma-Score $balancer_ewma_score always;
            add_header X-Alternative $proxy_alternative_upstream_name always;

            proxy_pass http://upstream_balancer;
@@LOG@@
        }

        location /configuration {
            client_max_body_size 21m;
            client_body_buffer_size @@BODY_BUFFER@@;
@@CONFIGURATION@@
        }
@@LOCATIONS@@
    }
_EOC_
        REUSEPORT => $p{reuseport} ? ' reuseport' : '',
        ROUTE => $p{route} // '',
        LOG => $p{log} // '',
        BODY_BUFFER => $p{body_buffer} // '21m',
        CONFIGURATION => $p{configuration},
        LOCATIONS => $p{locations} // '');
}

# The Lua front end's http{} part: the shared dicts, init_by_lua (the core library
# loaded, configuration and balancer required, T set up) and init_worker_by_lua,
# the upstream_balancer upstream, the endpoints and the ingress server (proxy
# location, /configuration, and /ilb-state: this worker's core, for T.state()),
# wired like ingress-nginx's nginx.tmpl (per-location $location_path,
# $balancer_ewma_score, $proxy_upstream_name; here the backend name comes from
# the X-Backend request header). Options:
#   endpoints            the endpoint letters (default a b c d)
#   ports                more T.PORTS entries: name => n of $TEST_NGINX_RAND_PORT_<n>
#   init                 more init_by_lua code, after T is set up
#   reuseport            the ingress server listens with reuseport (one socket a worker)
#   slow_endpoints       the endpoints "slow" and "slower" (they answer after 0.15 s
#                        and 0.3 s), on $TEST_NGINX_RAND_PORT_8 and _9
#   prohibited_localhost_port
#                        configuration.prohibited_localhost_port (nginx.tmpl sets the
#                        controller's status port; balancer.lua refuses peers on it,
#                        by default 10246, which a random test port could be)
#   config_body_buffer   client_body_buffer_size of /configuration (default 21m;
#                        a smaller one makes larger documents go through a temp file)
sub lua_http_config {
    my %opt = @_;
    my $endpoints = $opt{endpoints} // [qw(a b c d)];
    my $prohibited = defined $opt{prohibited_localhost_port}
        ? "        -- nginx.tmpl sets the controller's status port here; balancer.lua refuses\n"
          . "        -- peers on it (default 10246, which a random test port could be)\n"
          . "        configuration.prohibited_localhost_port = \"$opt{prohibited_localhost_port}\"\n"
        : '';
    my $route = <<'_EOC_';

            rewrite_by_lua_block {
                balancer.rewrite()
            }

_EOC_
    my $log = <<'_EOC_';

            log_by_lua_block {
                balancer.log()
            }
_EOC_
    my $configuration = <<'_EOC_';

            content_by_lua_block {
                configuration.call()
            }
_EOC_
    my $ilb_state = <<'_EOC_';

        location = /ilb-state {
            content_by_lua_block {
                local core = require("ingress_lb.core")
                local free, created = core.free_ctx_count()
                ngx.say("generation=", core.generation(), " free_ctx=", free,
                        " created_ctx=", created)
            }
        }
_EOC_
    return fill(<<'_EOC_',
    lua_package_path "$TEST_NGINX_ILB_LUA_DIR/?.lua;$TEST_NGINX_ILB_TEST_LIB/?.lua;/usr/share/lua/5.1/?.lua;;";

    # as ingress-nginx's nginx.tmpl declares them
    lua_shared_dict configuration_data 20m;
    lua_shared_dict certificate_data 20m;
    lua_shared_dict certificate_servers 5m;
    lua_shared_dict ocsp_response_cache 5m;
    log_subrequest on;

    init_by_lua_block {
        local core = require("ingress_lb.core")
        core.configure{ library = "$TEST_NGINX_ILB_LIB" }
        assert(core.load())

        configuration = require("configuration")
@@PROHIBITED@@
        balancer = require("balancer")

        -- test helpers: the driver only sends requests and counts
@@SETUP@@
@@INIT@@
    }

    init_worker_by_lua_block {
        balancer.init_worker()
    }

    upstream upstream_balancer {
        server 0.0.0.1; # placeholder

        balancer_by_lua_block {
            balancer.balance()
        }
    }

    # the endpoints
@@ENDPOINTS@@

@@SERVER@@
@@SLOW@@
_EOC_
        PROHIBITED => $prohibited,
        SETUP => t_setup($endpoints, %opt),
        INIT => $opt{init} // '',
        ENDPOINTS => endpoint_servers(@$endpoints),
        SERVER => ingress_server(reuseport => $opt{reuseport}, route => $route, log => $log,
                                 body_buffer => $opt{config_body_buffer},
                                 configuration => $configuration, locations => $ilb_state),
        SLOW => $opt{slow_endpoints} ? "\n" . slow_endpoint_servers() : '');
}

# The module front end's zone, its upstream_balancer upstream and endpoint servers
# (`endpoints`, default a b c). Options: zone (ingress_lb_zone size, default 1m),
# endpoints.
sub module_base_http_config {
    my %opt = @_;
    return fill(<<'_EOC_',
    ingress_lb_zone @@ZONE@@;

    upstream upstream_balancer {
        server 0.0.0.1; # placeholder
        ingress_lb;
    }

@@ENDPOINTS@@

_EOC_
        ZONE => $opt{zone} // '1m',
        ENDPOINTS => endpoint_servers(@{ $opt{endpoints} // [qw(a b c)] }));
}

# The module front end's http{} part for suites driven by T: module_base_http_config
# with the endpoints a to d, T set up in init_by_lua (the lua module only drives
# the test: every pick is the module's), and the ingress server wired like
# ingress-nginx's nginx.tmpl with the module's directives in place of the Lua
# calls. Options: ports, init, reuseport and slow_endpoints as for lua_http_config;
# locations: more locations of the ingress server.
sub module_http_config {
    my %opt = @_;
    return module_base_http_config(endpoints => [qw(a b c d)]) . fill(<<'_EOC_',
    lua_package_path "$TEST_NGINX_ILB_TEST_LIB/?.lua;;";

    init_by_lua_block {
        -- test helpers: the driver only sends requests and counts (the same
        -- helpers as the Lua front end's suites); every pick is the module's
@@SETUP@@
@@INIT@@
    }

@@SERVER@@
@@SLOW@@
_EOC_
        SETUP => t_setup([qw(a b c d)], %opt),
        INIT => $opt{init} // '',
        SERVER => ingress_server(
            reuseport => $opt{reuseport},
            route => "            ingress_lb_route on;\n\n",
            configuration => "            ingress_lb_configuration;\n",
            locations => $opt{locations}),
        SLOW => $opt{slow_endpoints} ? "\n" . slow_endpoint_servers() : '');
}

# The settings every suite uses (repeat_each(1), no_shuffle(), no_long_string(),
# log_level('info')) and, given options, a block preprocessor: ilb_preprocess with
# them. Call it after `use Test::Nginx::Socket`.
sub ilb_setup {
    my %opt = @_;
    Test::Nginx::Socket::repeat_each(1);
    Test::Nginx::Socket::no_shuffle();
    Test::Nginx::Socket::no_long_string();
    Test::Nginx::Socket::log_level('info');
    Test::Nginx::Socket::add_block_preprocessor(sub { ilb_preprocess(shift, %opt) }) if %opt;
}

# For add_block_preprocessor: the shared parts before the block's own. Options:
#   http_config   prepended to the block's http_config. A block named
#                 "... without $balancer_ewma_score ..." gets it without the lines
#                 that mention that variable, one named "... without
#                 $location_path ..." without the lines that set that one.
#   config        prepended to the block's config
#   request       the request of a block without one (e.g. "GET /t")
#   timeout       the timeout of a block without one
sub ilb_preprocess {
    my ($block, %opt) = @_;
    if (defined(my $http = $opt{http_config})) {
        $http =~ s/^.*\$balancer_ewma_score.*\n//mg
            if $block->name =~ /without \$balancer_ewma_score/;
        $http =~ s/^.*set \$location_path.*\n//mg if $block->name =~ /without \$location_path/;
        $block->set_value(http_config => $http . ($block->http_config // ''));
    }
    if (defined $opt{config}) {
        $block->set_value(config => $opt{config} . ($block->config // ''));
    }
    for my $section (qw(request timeout)) {
        $block->set_value($section => $opt{$section})
            if defined $opt{$section} && !defined $block->$section;
    }
}

# The Lua suites' way to see which certificate a TLS server presented, independently
# of the code under test: given probe name => the certificate file it trusts (under
# $TEST_NGINX_ILB_CERTS; the CA for a chain), a location /tls-probe/<name> per probe
# (for the ingress server's `locations`) whose handshake with the TLS server
# (T.PORTS.tls) verifies against that certificate only, and the init_by_lua lines
# that give T the candidates (T.served(sni) lists the names whose probe verified).
# Failed verifications are logged at [error] by lua-nginx-module: the probes log to
# logs/tls-probe.log. Returns (locations, init lines).
sub lua_tls_probes {
    my (%trust) = @_;
    my @candidates = sort keys %trust;
    my $locations = join '', map { <<"_EOC_" } @candidates;
    location = /tls-probe/$_ {
        lua_ssl_trusted_certificate \$TEST_NGINX_ILB_CERTS/$trust{$_};
        lua_ssl_verify_depth 2;
        error_log logs/tls-probe.log info;
        content_by_lua_block {
            ngx.say(T.tls_probe(T.PORTS.tls, ngx.var.arg_sni))
        }
    }
_EOC_
    my $names = join ', ', map { "\"$_\"" } @candidates;
    my $init = <<"_EOC_";
        T.CERTS = "\$TEST_NGINX_ILB_CERTS"
        T.TLS_CANDIDATES = { $names }
_EOC_
    return ($locations, $init);
}

1;
