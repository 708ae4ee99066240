# Self-test of the Test::Nginx::Socket runner (the fallback in
# t/compat/fallback, or the real openresty/test-nginx when installed).
# Plain nginx only: no lua, no project code.
#
#   prove -It/compat -MIngressLbFallback t/compat/selftest.t

use Test::Nginx::Socket;

repeat_each(2);
no_shuffle();
no_long_string();
log_level('info');
worker_connections(128);

our $HtmlDir = html_dir();
$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

# Every block gets a shared /ping location (TEST 10 relies on it).
add_block_preprocessor(sub {
    my $block = shift;
    my $config = $block->config // '';
    $block->set_value("config", $config . "\n        location = /ping { return 200 'pong'; }\n");
});

# 2 assertions per block (status code + one body/log check) plus the extra
# ones counted on each block below ("extra: N"), which sum to 18.
plan tests => repeat_each() * (blocks() * 2 + 18);

run_tests();

__DATA__

=== TEST 1: sanity: body, no_error_log (extra: 2)
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
GET /t
--- response_body
hello
--- no_error_log
[error]
[alert]



=== TEST 2: error_code and multi-line response_body_like
--- config
    location = /t {
        return 404;
    }
--- request
GET /t
--- error_code: 404
--- response_body_like: 404 Not Found.*nginx



=== TEST 3: POST body is sent with Content-Length; backend on a random port
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            return 200 "got: $http_x_body|$content_length\n";
        }
    }
--- config
    location = /echo {
        proxy_set_header X-Body $request_body;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1/;
    }
--- request
POST /echo
hello world
--- response_body
got: hello world|11



=== TEST 4: more_headers and the default Host header
--- config
    location = /t {
        return 200 "host=$host x=$http_x_test\n";
    }
--- request
GET /t
--- more_headers
X-Test: abc
--- response_body
host=localhost x=abc



=== TEST 5: response_headers, including an absent one (extra: 3)
--- config
    location = /t {
        add_header X-Foo bar;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Foo: bar
!X-Absent
Content-Type: text/plain
--- response_body
ok



=== TEST 6: response_headers_like (extra: 1)
--- config
    location = /t {
        add_header X-Foo bar;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers_like
X-Foo: b.r
Content-Length: \d+



=== TEST 7: several requests on one nginx, array expectations (extra: 4)
--- config
    location = /a {
        return 200 "a\n";
    }
--- request eval
["GET /a", "GET /b"]
--- error_code eval
[200, 404]
--- response_body eval
["a\n", qr/404 Not Found/]
--- no_error_log
[alert]



=== TEST 8: error_log, as substring and as regex (extra: 1)
--- config
--- request
GET /nope.html
--- error_code: 404
--- error_log eval
[qr/open\(\) ".*nope\.html" failed/, "No such file or directory"]



=== TEST 9: grep_error_log and a per-block log_level
--- log_level: warn
--- config
--- request
GET /nope.html
--- error_code: 404
--- grep_error_log: No such file or directory
--- grep_error_log_out
No such file or directory



=== TEST 10: location added by add_block_preprocessor
--- config
--- request
GET /ping
--- response_body chomp
pong



=== TEST 11: user_files, in a sub-directory too (extra: 1)
--- user_files
>>> foo.txt
foo
>>> sub/bar.html
<b>bar</b>
--- config
--- request
GET /sub/bar.html
--- response_headers
Content-Type: text/html
--- response_body
<b>bar</b>



=== TEST 12: main_config and $TEST_NGINX_HTML_DIR
--- main_config
    thread_pool selftest_pool threads=1;
--- config
    location = /data.txt {
        root $TEST_NGINX_HTML_DIR;
        aio threads=selftest_pool;
    }
--- user_files
>>> data.txt
threaded
--- request
GET /data.txt
--- response_body
threaded



=== TEST 13: $TEST_NGINX_SERVER_PORT in config, $ServerPort in expectations (extra: 1)
--- config
    location = /t {
        add_header X-Port $server_port;
        return 200 "port=$TEST_NGINX_SERVER_PORT\n";
    }
--- request
GET /t
--- response_headers
X-Port: $ServerPort
--- response_body
port=$ServerPort



=== TEST 14: pipelined_requests on one keep-alive connection (extra: 2)
--- config
    location = /a {
        return 200 "a\n";
    }
    location = /b {
        return 200 "b\n";
    }
--- pipelined_requests eval
["GET /a", "GET /b"]
--- response_body eval
["a\n", "b\n"]



=== TEST 15: chunked response, timeout and wait (extra: 2)
--- user_files
>>> c.txt
hello foo
--- config
    location = /c.txt {
        root $TEST_NGINX_HTML_DIR;
        sub_filter foo bar;
        sub_filter_types *;
    }
--- request
GET /c.txt
--- timeout: 2s
--- wait: 0.1
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body
hello bar



=== TEST 16: HEAD request has no body
--- config
    location = /t {
        return 200 "x\n";
    }
--- request
HEAD /t
--- response_body



=== TEST 17: skip_nginx skips the block (nginx is not even started)
--- skip_nginx: 2: > 0.1.0
--- config
    location = /t {
        this_directive_does_not_exist;
    }
--- request
GET /t
--- response_body
never



=== TEST 18: a SKIP block is not counted nor run
--- SKIP
--- config
    location = /t {
        this_directive_does_not_exist;
    }
--- request
GET /t



=== TEST 19: response_body eval qr//, request with a leading comment
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
    # this comment line is skipped
    GET /t
--- response_body eval
qr/^hel+o\n\z/



=== TEST 20: raw_request
--- config
    location = /t {
        return 200 "raw $server_protocol\n";
    }
--- raw_request eval
"GET /t HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- response_body
raw HTTP/1.0



=== TEST 21: access_log (extra: 1)
--- config
    location = /logged {
        return 200 "ok\n";
    }
--- request
GET /logged?x=1
--- access_log
"GET /logged?x=1 HTTP/1.1" 200
--- response_body
ok
