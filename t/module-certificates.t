# ingress_lb_certificate: the certificate of a TLS handshake chosen by SNI from
# the servers document (POST /configuration/servers, as ingress-nginx's
# controller sends it), with the server's static ssl_certificate as the fallback;
# GET /configuration/certs?hostname=.
#
# Every block runs nginx with two workers. Its `--- tls` section lists real TLS
# handshakes made after the block's last request, with `openssl s_client`, on a
# server that listens with `ssl reuseport` (so the kernel spreads connections over
# both workers), one per line:
#
#     <SNI, or - for none> <expected certificates> [xN]
#
# where the expected certificates are the names of tests/data/certs/*.crt the
# server sent, leaf first, joined by '+' (e.g. chain+ca), and xN repeats the
# handshake N times (each must agree). `--- tls_workers: 2` also asks that the
# handshakes of the block were served by at least two worker processes (each
# handshake sends "GET /", answered with $pid). Each line is one test.
#
#   make module   # or see nginx-module/README.md
#   TEST_NGINX_LOAD_MODULES=$PWD/target/release/ngx_http_ingress_lb_module.so \
#     prove -It/compat -MIngressLbFallback t/module-certificates.t
#
# TEST_NGINX_ILB_TLS_PORT sets the TLS server's port (default: a free one).

use lib '.';
use t::IngressLbTest 'module', 'no_lua_driver';
use Test::Nginx::Socket;
use IO::Socket::INET ();

my $CERTS = "$t::IngressLbTest::ROOT/tests/data/certs";
$ENV{TEST_NGINX_ILB_CERTS} = $CERTS;
$ENV{TEST_NGINX_ILB_TLS_PORT} ||= do {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    $port;
};

my $openssl = `sh -c 'command -v openssl'`;
chomp $openssl;
if (!$openssl) {
    Test::More::plan(skip_all => 'the openssl command is needed (Debian package openssl)');
}

ilb_setup();
master_on();
workers(2);
check_accum_error_log();

sub slurp {
    my ($file) = @_;
    open my $in, '<', $file or die "$file: $!";
    local $/;
    return scalar <$in>;
}

# The base64 text of each test certificate: what s_client prints for it.
my %NAME_OF;
for my $name (qw(default static exact exact-v2 wildcard wildcard-top other chain ca)) {
    my $pem = slurp("$CERTS/$name.crt");
    $pem =~ /-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----/s or die "$name.crt";
    (my $b64 = $1) =~ s/\s+//g;
    $NAME_OF{$b64} = $name;
}

# A servers document: certificates (uid => name of tests/data/certs/<name>.pem)
# and servers (hostname => uid or "-1"), as the controller encodes it.
sub doc {
    my (%p) = @_;
    my $str = sub {
        my $s = shift;
        $s =~ s/(["\\])/\\$1/g;
        $s =~ s/\n/\\n/g;
        return "\"$s\"";
    };
    my $certs = join ',', map { $str->($_) . ':' . $str->(slurp("$CERTS/$p{certificates}{$_}.pem")) }
        sort keys %{ $p{certificates} // {} };
    my $servers = join ',', map { $str->($_) . ':' . $str->($p{servers}{$_}) }
        sort keys %{ $p{servers} // {} };
    return "{\"certificates\":{$certs},\"servers\":{$servers}}";
}

# One handshake: (the certificates the server sent, by name, joined by '+'; the pid
# of the worker that answered "GET /").
sub handshake {
    my ($sni) = @_;
    my $name_opt = $sni eq '-' ? '-noservername' : "-servername '$sni'";
    my $out = `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 10 $openssl s_client -connect 127.0.0.1:$ENV{TEST_NGINX_ILB_TLS_PORT} $name_opt -showcerts -ign_eof 2>/dev/null`;
    my @names;
    while ($out =~ /-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----/sg) {
        (my $b64 = $1) =~ s/\s+//g;
        push @names, $NAME_OF{$b64} // 'unknown';
    }
    my ($pid) = $out =~ /^pid=(\d+)/m;
    return ((@names ? join('+', @names) : 'no certificate'), $pid);
}

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $spec = $block->tls;
    return unless defined $spec;
    my $last = ref $block->request eq 'ARRAY' ? $#{ $block->request } : 0;
    return unless $req_idx == $last;
    my @lines = grep { /\S/ && !/^\s*#/ } split /\n/, $spec;
    my %pids;
    for my $line (@lines) {
        my ($sni, $expected, $times) = split ' ', $line;
        $times = defined $times && $times =~ /^x(\d+)$/ ? $1 : 1;
        my $desc = $block->name . " - TLS SNI $sni x$times";
        if ($dry_run) {
            Test::More->builder->skip("$desc - tests skipped due to $dry_run");
            next;
        }
        my %got;
        for (1 .. $times) {
            my ($names, $pid) = handshake($sni);
            $got{$names}++;
            $pids{$pid}++ if defined $pid;
        }
        Test::More::is(join(', ', sort keys %got), $expected, $desc);
    }
    if (defined(my $want = $block->tls_workers)) {
        my $desc = $block->name . " - TLS served by at least $want workers";
        if ($dry_run) {
            Test::More->builder->skip("$desc - tests skipped due to $dry_run");
        } else {
            Test::More::cmp_ok(scalar(keys %pids), '>=', $want, $desc);
        }
    }
});

our $http_config = <<'_EOC_';
    ingress_lb_zone 1m;
    ingress_lb_servers_zone 1m;

    # the TLS server: the static certificate is the fallback
    server {
        listen 127.0.0.1:$TEST_NGINX_ILB_TLS_PORT ssl reuseport;
        server_name _;
        ssl_certificate $TEST_NGINX_ILB_CERTS/static.crt;
        ssl_certificate_key $TEST_NGINX_ILB_CERTS/static.key;
        ingress_lb_certificate on;

        location / {
            return 200 "pid=$pid sni=$ssl_server_name\n";
        }
    }
_EOC_

my $config = <<'_EOC_';
    location /configuration {
        client_max_body_size 21m;
        client_body_buffer_size 21m;
        ingress_lb_configuration;
    }
_EOC_

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', $http_config) unless defined $block->http_config;
    $block->set_value('config', $config . ($block->config // ''));
    $block->set_value('timeout', 30) unless defined $block->timeout;
});

# The documents of the blocks below.
our %DOC = (
    # exact names, one-label wildcards (*.b.example.com; *.example.com matches
    # b.example.com but never a.b.example.com) and the default `_`
    all => doc(
        certificates => { c_default => 'default', c_exact => 'exact', c_wild => 'wildcard',
                          c_top => 'wildcard-top', c_other => 'other' },
        servers => { '_' => 'c_default', 'exact.example.com' => 'c_exact',
                     '*.b.example.com' => 'c_wild', '*.example.com' => 'c_top',
                     'other.example.com' => 'c_other' }),
    # no default: names that match nothing keep the static certificate
    no_default => doc(
        certificates => { c_exact => 'exact', c_wild => 'wildcard' },
        servers => { 'exact.example.com' => 'c_exact', '*.b.example.com' => 'c_wild' }),
    # exact.example.com removed with "-1" (its certificate is still listed)
    removed => doc(
        certificates => { c_default => 'default', c_exact => 'exact', c_other => 'other' },
        servers => { '_' => 'c_default', 'exact.example.com' => '-1',
                     'other.example.com' => 'c_other' }),
    # the same uid with new content: exact-v2 has the same name, another key
    replaced => doc(
        certificates => { c_default => 'default', c_exact => 'exact-v2', c_wild => 'wildcard',
                          c_top => 'wildcard-top', c_other => 'other' },
        servers => { '_' => 'c_default', 'exact.example.com' => 'c_exact',
                     '*.b.example.com' => 'c_wild', '*.example.com' => 'c_top',
                     'other.example.com' => 'c_other' }),
    bad => doc(
        certificates => { c_exact => 'bad' },
        servers => { 'exact.example.com' => 'c_exact' }),
    keyonly => doc(
        certificates => { c_exact => 'keyonly' },
        servers => { 'exact.example.com' => 'c_exact' }),
    mismatched => doc(
        certificates => { c_exact => 'mismatched' },
        servers => { 'exact.example.com' => 'c_exact' }),
    chain => doc(
        certificates => { c_chain => 'chain', c_default => 'default' },
        servers => { 'chain.example.com' => 'c_chain', '_' => 'c_default' }),
    # 40 certificates of about 1 KiB: more than a 32k zone holds
    large => doc(
        certificates => { map { ("c$_" => 'exact') } 1 .. 40 },
        servers => { map { ("h$_.example.com" => "c$_") } 1 .. 40 }),
);

# TEST 10: a servers zone of 32k
our $http_config_for_413 = $http_config =~ s/ingress_lb_servers_zone 1m/ingress_lb_servers_zone 32k/r;

our $EXACT_PEM = slurp("$CERTS/exact.pem");
our $WILDCARD_PEM = slurp("$CERTS/wildcard.pem");

run_tests();

Test::More::done_testing();

__DATA__

=== TEST 1: before any servers document, every handshake gets the static certificate
--- request
GET /configuration/certs?hostname=exact.example.com
--- error_code: 404
--- response_body chop
No key associated with this hostname.
--- tls
exact.example.com static
- static
--- no_error_log
[error]
[alert]



=== TEST 2: exact name, one-label wildcard, default; a two-label name is not matched by a one-label wildcard
--- request eval
["POST /configuration/servers\n$::DOC{all}"]
--- error_code: 201
--- tls
exact.example.com exact x4
EXACT.Example.COM. exact
other.example.com other
x.b.example.com wildcard x4
x.y.b.example.com default
b.example.com wildcard-top
unknown.test default x4
- default x4
--- no_error_log
[error]
[alert]



=== TEST 3: without `_` in the document, a name that matches nothing keeps the static certificate
--- request eval
["POST /configuration/servers\n$::DOC{no_default}"]
--- error_code: 201
--- tls
exact.example.com exact
x.b.example.com wildcard
unknown.test static x4
- static
--- no_error_log
[error]
[alert]



=== TEST 4: a hostname mapped to "-1" is no longer served (each POST is the whole truth)
--- request eval
["POST /configuration/servers\n$::DOC{all}",
 "POST /configuration/servers\n$::DOC{removed}",
 "GET /configuration/certs?hostname=exact.example.com",
 "GET /configuration/certs?hostname=other.example.com"]
--- error_code eval
[201, 201, 404, 200]
--- tls
exact.example.com default x4
x.b.example.com default
other.example.com other
--- no_error_log
[error]
[alert]



=== TEST 5: a bad PEM, a key without certificate, a certificate with another's key: 400, the old certificates stay
--- request eval
["POST /configuration/servers\n$::DOC{all}",
 "POST /configuration/servers\n$::DOC{bad}",
 "POST /configuration/servers\n$::DOC{keyonly}",
 "POST /configuration/servers\n$::DOC{mismatched}",
 "POST /configuration/servers\n{\"certificates\": {",
 "GET /configuration/certs?hostname=exact.example.com"]
--- error_code eval
[201, 400, 400, 400, 400, 200]
--- response_body_like eval
["^\$", "c_exact", "c_exact", "c_exact", ".", "^-----BEGIN CERTIFICATE-----"]
--- tls
exact.example.com exact x4
x.b.example.com wildcard
--- no_error_log
[alert]



=== TEST 6: the content of a uid replaced: the new certificate is served (same name, other key), by both workers
--- request eval
["POST /configuration/servers\n$::DOC{all}",
 "POST /configuration/servers\n$::DOC{replaced}"]
--- error_code eval
[201, 201]
--- tls
exact.example.com exact-v2 x16
--- tls_workers: 2
--- no_error_log
[error]
[alert]



=== TEST 7: a chain: the leaf and its intermediate are sent
--- request eval
["POST /configuration/servers\n$::DOC{chain}"]
--- error_code: 201
--- tls
chain.example.com chain+ca x4
unknown.test default
--- no_error_log
[error]
[alert]



=== TEST 8: two workers both serve a newly POSTed certificate (one of them received the POST)
--- request eval
["POST /configuration/servers\n$::DOC{no_default}",
 "POST /configuration/servers\n$::DOC{all}"]
--- error_code eval
[201, 201]
--- tls
exact.example.com exact x8
other.example.com other x8
unknown.test default x8
--- tls_workers: 2
--- no_error_log
[error]
[alert]



=== TEST 9: GET /configuration/certs: the PEM in force for exactly that hostname
--- request eval
["POST /configuration/servers\n$::DOC{all}",
 "GET /configuration/certs?hostname=exact.example.com",
 "GET /configuration/certs?hostname=%2A.b.example.com",
 "GET /configuration/certs?hostname=x.b.example.com",
 "GET /configuration/certs?hostname=nothing.test",
 "GET /configuration/certs",
 "POST /configuration/certs?hostname=exact.example.com\nx",
 "GET /configuration/servers"]
--- error_code eval
[201, 200, 200, 404, 404, 400, 400, 400]
--- response_body eval
["", $::EXACT_PEM, $::WILDCARD_PEM,
 "No key associated with this hostname.",
 "No key associated with this hostname.",
 "Hostname must be specified.",
 "Only GET requests are allowed!",
 "Only POST requests are allowed!"]
--- no_error_log
[error]
[alert]



=== TEST 10: a servers document larger than the zone is refused with 413, nothing changed
--- http_config eval: $::http_config_for_413
--- request eval
["POST /configuration/servers\n$::DOC{all}",
 "POST /configuration/servers\n$::DOC{large}"]
--- error_code eval
[201, 413]
--- response_body_like eval
["^\$", "raise ingress_lb_servers_zone"]
--- tls
exact.example.com exact
--- no_error_log
[alert]



=== TEST 11: a rejected servers document is logged at warn with the core's reason
--- request eval
["POST /configuration/servers\n$::DOC{mismatched}"]
--- error_code: 400
--- response_body_like: c_exact
--- error_log eval
qr/\[warn\] .*ingress_lb: rejected servers configuration: .*c_exact/
--- tls
exact.example.com static
--- no_error_log
[alert]
