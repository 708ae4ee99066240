# ingress_lb_configuration: the controller endpoint of the nginx module
# (GET/POST <prefix>/backends, as ingress-nginx's configuration.lua), the shared
# zone limits, and request bodies kept in memory or spilled to a temp file.
#
#   make nginx-module   # or see nginx-module/README.md
#   TEST_NGINX_LOAD_MODULES=$PWD/target/release/ngx_http_ingress_lb_module.so \
#     prove -It/compat -MIngressLbFallback t/module-config.t

use lib '.';
use t::IngressLbTest 'module', 'no_lua_driver';
use Test::Nginx::Socket;

ilb_setup();
# Log checks read the whole error.log: a block with several requests is checked
# after each of them, and a line logged by the first one must count for all.
check_accum_error_log();

# Shared http{} part (t/IngressLbTest.pm): the zone, the balancer upstream and
# three real backends.
my $http_config = module_base_http_config(zone => '64k');

# Locations: the endpoint, a proxied location, and helpers that POST documents
# naming the random backend ports (the test client cannot know them).
my $config = <<'_EOC_';
    location /configuration {
        client_max_body_size 21m;
        client_body_buffer_size 21m;
        ingress_lb_configuration;
    }

    location = /p {
        set $proxy_upstream_name "default-svc-80";
        ingress_lb_route on;
        proxy_pass http://upstream_balancer/;
    }

    location = /t/set-a {
        proxy_method POST;
        proxy_set_header Content-Type application/json;
        proxy_set_body '[{"name":"default-svc-80","port":80,"endpoints":[{"address":"127.0.0.1","port":"$TEST_NGINX_RAND_PORT_1"}]}]';
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/configuration/backends;
    }
_EOC_

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', $http_config) unless defined $block->http_config;
    $block->set_value('config', $config . ($block->config // '')) unless $block->no_default_config;
});

run_tests();

Test::More::done_testing();

__DATA__

=== TEST 1: GET before any POST is 404 with a clear message
--- request
GET /configuration/backends
--- error_code: 404
--- response_body chop
No backends configuration has been posted yet.
--- no_error_log
[error]
[alert]



=== TEST 2: POST a document, GET returns it byte for byte, the backend serves
--- request eval
[
"POST /configuration/backends
[{\"name\":\"default-svc-80\",\"endpoints\":[{\"address\":\"127.0.0.1\",\"port\":\"1\"}]}, {\"name\":\"other\",\"endpoints\":[]}]",
"GET /configuration/backends",
"GET /t/set-a",
"GET /p",
]
--- error_code eval
[201, 200, 201, 200]
--- response_body eval
[
"",
"[{\"name\":\"default-svc-80\",\"endpoints\":[{\"address\":\"127.0.0.1\",\"port\":\"1\"}]}, {\"name\":\"other\",\"endpoints\":[]}]",
"",
"a\n",
]
--- no_error_log
[error]
[alert]



=== TEST 3: malformed JSON is rejected with 400 and the old configuration keeps serving
--- request eval
[
"GET /t/set-a",
"POST /configuration/backends
[{\"name\":\"default-svc-80\",\"endpoints\":[",
"GET /p",
"GET /configuration/backends",
]
--- error_code eval
[201, 400, 200, 200]
--- response_body_like eval
[
"^\$",
"^invalid JSON",
"^a\n\$",
"^\\[\\{\"name\":\"default-svc-80\",\"port\":80,\"endpoints\":\\[\\{\"address\":\"127.0.0.1\",\"port\":\"\\d+\"\\}\\]\\}\\]\$",
]
--- no_error_log
[alert]



=== TEST 4: a wrongly typed field is rejected naming the backend and the field; old config kept
--- request eval
[
"GET /t/set-a",
"POST /configuration/backends
[{\"name\":\"default-svc-80\",\"endpoints\":\"10.0.0.1:80\"}]",
"GET /p",
]
--- error_code eval
[201, 400, 200]
--- response_body_like eval
[
"^\$",
"backend \"default-svc-80\".*endpoints",
"^a\n\$",
]
--- no_error_log
[alert]



=== TEST 5: methods other than GET and POST get 400 (configuration.lua's text)
--- request eval
["PUT /configuration/backends
[]", "DELETE /configuration/backends", "HEAD /configuration/backends"]
--- error_code eval
[400, 400, 400]
--- response_body eval
["Only POST and GET requests are allowed!", "Only POST and GET requests are allowed!", ""]
--- no_error_log
[error]
[alert]



=== TEST 6: paths other than .../backends, .../servers and .../certs are 404 "Not found!"
--- request eval
["GET /configuration/general", "POST /configuration/general\n{}", "GET /configuration/backends/x"]
--- error_code eval
[404, 404, 404]
--- response_body eval
["Not found!", "Not found!", "Not found!"]
--- no_error_log
[error]
[alert]



=== TEST 7: a body larger than the zone is refused with 413 (Content-Length known), nothing changes
--- http_config
    ingress_lb_zone 32k;
    upstream upstream_balancer { server 0.0.0.1; ingress_lb; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a\n"; }
--- request eval
[
"GET /t/set-a",
"POST /configuration/backends
[{\"name\":\"" . ("x" x 40000) . "\",\"endpoints\":[]}]",
"GET /p",
]
--- error_code eval
[201, 413, 200]
--- response_body_like eval
["^\$", "^configuration is \\d+ bytes, larger than the \\d+ bytes the shared zone can hold", "^a\n\$"]
--- no_error_log
[alert]



=== TEST 8: a chunked body larger than the zone is refused with 413 after reading it
--- http_config
    ingress_lb_zone 32k;
    upstream upstream_balancer { server 0.0.0.1; ingress_lb; }
--- raw_request eval
my $doc = "[{\"name\":\"" . ("y" x 40000) . "\",\"endpoints\":[]}]";
"POST /configuration/backends HTTP/1.1\r
Host: localhost\r
Connection: close\r
Transfer-Encoding: chunked\r
\r
" . sprintf("%x", length $doc) . "\r
$doc\r
0\r
\r
"
--- error_code: 413
--- response_body_like: ^configuration is 400\d\d bytes, larger than the \d+ bytes
--- no_error_log
[alert]



=== TEST 9: a large valid body spilled to a temporary file is read from the file and applied
--- config
    location /cfg-small-buffer {
        client_max_body_size 21m;
        client_body_buffer_size 1k;
        ingress_lb_configuration;
    }
--- request eval
my @b = map { "{\"name\":\"svc-$_\",\"endpoints\":[{\"address\":\"127.0.0.1\",\"port\":\"" . (1000 + $_) . "\"}]}" } 1 .. 400;
my $doc = "[" . CORE::join(",", @b) . "]";
["POST /cfg-small-buffer/backends\n$doc", "GET /configuration/backends"]
--- error_code eval
[201, 200]
--- response_body_like eval
["^\$", "^\\[\\{\"name\":\"svc-1\",.*\"name\":\"svc-400\",\"endpoints\":\\[\\{\"address\":\"127.0.0.1\",\"port\":\"1400\"\\}\\]\\}\\]\$"]
--- error_log
a client request body is buffered to a temporary file
--- no_error_log
[alert]



=== TEST 10: a chunked body in several chunks is reassembled
--- raw_request eval
my $doc = "[{\"name\":\"chunky\",\"endpoints\":[{\"address\":\"127.0.0.1\",\"port\":\"81\"}]}]";
my ($x, $y) = (substr($doc, 0, 20), substr($doc, 20));
"POST /configuration/backends HTTP/1.1\r
Host: localhost\r
Connection: close\r
Transfer-Encoding: chunked\r
\r
" . sprintf("%x", length $x) . "\r
$x\r
" . sprintf("%x", length $y) . "\r
$y\r
0\r
\r
"
--- error_code: 201
--- response_body:
--- no_error_log
[error]
[alert]



=== TEST 11: a rejection is logged at error level with the core's message
--- request
POST /configuration/backends
[{"name":"svc-1","endpoints":[{"address":"not-an-ip","port":"80"}]}]
--- error_code: 400
--- response_body_like: svc-1
--- error_log eval
qr/\[warn\] .*ingress_lb: rejected backends configuration: backend "svc-1"/
--- no_error_log
[alert]



=== TEST 12: an empty POST is a 400 and changes nothing
--- request eval
["GET /t/set-a", "POST /configuration/backends", "GET /p"]
--- error_code eval
[201, 400, 200]
--- response_body_like eval
["^\$", "empty", "^a\n\$"]
--- no_error_log
[alert]



=== TEST 13: without ingress_lb_zone a default zone is created when the module is used
--- http_config
    upstream upstream_balancer { server 0.0.0.1; ingress_lb; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a\n"; }
--- request eval
["GET /t/set-a", "GET /p", "GET /configuration/backends"]
--- error_code eval
[201, 200, 200]
--- response_body_like eval
["^\$", "^a\n\$", "^\\[\\{\"name\":\"default-svc-80\""]
--- no_error_log
[error]
[alert]



=== TEST 14: a POST to a location with a too small client_max_body_size is refused by nginx (413)
--- config
    location /cfg-tiny {
        client_max_body_size 10;
        ingress_lb_configuration;
    }
--- request
POST /cfg-tiny/backends
[{"name":"default-svc-80","endpoints":[]}]
--- error_code: 413
--- response_body_like: 413 Request Entity Too Large
--- no_error_log
[alert]



=== TEST 15: ingress_lb_route inherited from the server does not apply to the configuration endpoint
--- config
    ingress_lb_route on;
    location /cfg-routed {
        ingress_lb_configuration;
    }
--- request eval
["GET /cfg-routed/backends", "POST /cfg-routed/backends\n[{\"name\":\"default-svc-80\",\"endpoints\":[]}]", "GET /p"]
--- error_code eval
[404, 201, 503]
--- no_error_log
[error]
[alert]
