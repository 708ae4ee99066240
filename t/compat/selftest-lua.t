# Self-test of the runner with dynamic modules (TEST_NGINX_LOAD_MODULES),
# master_on()/workers() and env_to_nginx(), using Debian's lua module.
#
#   TEST_NGINX_LOAD_MODULES="/usr/lib/nginx/modules/ndk_http_module.so /usr/lib/nginx/modules/ngx_http_lua_module.so" \
#     HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove t/compat/selftest-lua.t
#
# Without TEST_NGINX_LOAD_MODULES the Debian module paths above are used when
# they exist; otherwise the file is skipped.

my @debian_lua_modules;
BEGIN {
    @debian_lua_modules = map { "/usr/lib/nginx/modules/$_" }
                          qw(ndk_http_module.so ngx_http_lua_module.so);
    if (!defined $ENV{TEST_NGINX_LOAD_MODULES} && !grep { !-f $_ } @debian_lua_modules) {
        $ENV{TEST_NGINX_LOAD_MODULES} = "@debian_lua_modules";
    }
}

use Test::Nginx::Socket;

if (($ENV{TEST_NGINX_LOAD_MODULES} // '') !~ /ngx_http_lua_module/) {
    plan skip_all => 'the lua module is not available (set TEST_NGINX_LOAD_MODULES)';
}

repeat_each(2);
no_shuffle();
master_on();
workers(2);
env_to_nginx("SELFTEST_GREETING=hello from env");

# status code + body + no_error_log [error] per block; TEST 2 has three more
# (two error_log patterns and a grep_error_log check).
plan tests => repeat_each() * (blocks() * 3 + 3);

run_tests();

__DATA__

=== TEST 1: content_by_lua_block (chunked response)
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("hello from lua ", ngx.var.uri)
        }
    }
--- request
GET /t
--- response_body
hello from lua /t
--- no_error_log
[error]



=== TEST 2: ngx.log lands in error.log; grep_error_log; error_code
--- config
    location = /t {
        content_by_lua_block {
            ngx.log(ngx.WARN, "selftest-marker ", 42)
            ngx.status = 503
            ngx.say("unavailable")
        }
    }
--- request
GET /t
--- error_code: 503
--- response_body
unavailable
--- error_log
selftest-marker 42
[warn]
--- grep_error_log eval: qr/selftest-marker \d+/
--- grep_error_log_out
selftest-marker 42
--- no_error_log
[error]



=== TEST 3: env_to_nginx() is visible to lua
--- config
    location = /t {
        content_by_lua_block {
            ngx.say(os.getenv("SELFTEST_GREETING"))
        }
    }
--- request
GET /t
--- response_body
hello from env
--- no_error_log
[error]



=== TEST 4: request body is read by lua (POST with Content-Length)
--- config
    location = /t {
        content_by_lua_block {
            ngx.req.read_body()
            ngx.say("body=[", ngx.req.get_body_data(), "] len=", ngx.var.http_content_length)
        }
    }
--- request
POST /t
  some body text  
--- response_body
body=[some body text] len=14
--- no_error_log
[error]
