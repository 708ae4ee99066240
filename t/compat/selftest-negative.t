# Negative self-test: a runner that cannot fail is a defect.
#
# Runs small Test::Nginx::Socket files through the FALLBACK runner (put first
# in @INC on purpose, so this checks the fallback even where the real
# test-nginx is installed) and asserts that broken expectations, an invalid
# nginx config and a hanging request are reported as failures, that prove
# says FAIL for them (and PASS for a good file), and that IngressLbFallback
# never shadows another Test::Nginx::Socket.
#
#   prove t/compat/selftest-negative.t

use strict;
use warnings;

use Test::More;
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::INET;

my $compat   = File::Spec->rel2abs(dirname(__FILE__));
my $fallback = "$compat/fallback";
my $tmp      = tempdir(CLEANUP => 1);

# A free loopback port for the inner nginx, so we never clash with other tests.
sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1) or die "bind: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub write_file {
    my ($path, $text) = @_;
    open my $out, '>', $path or die "$path: $!";
    print $out $text;
    close $out;
}

# Run a command with stdout+stderr captured; returns (exit status, output).
sub run_cmd {
    my @cmd = @_;
    my $log = "$tmp/cmd.out";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $log or die;
        open STDERR, '>&', \*STDOUT or die;
        exec @cmd or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $status = $? >> 8;
    open my $in, '<', $log or die;
    local $/;
    return ($status, scalar <$in>);
}

my $port = free_port();
local $ENV{TEST_NGINX_SERVER_PORT} = $port;
local $ENV{TEST_NGINX_SERVROOT}    = "$tmp/servroot";
local $ENV{TEST_NGINX_NO_SHUFFLE}  = 1;
delete local $ENV{TEST_NGINX_LOAD_MODULES};
my @perl = ($^X, "-I$fallback", "-I$compat", '-MIngressLbFallback');

# --- a file whose blocks (but the first) must all fail ----------------------
write_file("$tmp/failing.t", <<'EOT');
use IO::Socket::INET;
our $Hang;
BEGIN {
    # accepts connections (kernel backlog) but never answers
    $Hang = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 5) or die $!;
    $ENV{TEST_NGINX_HANG_PORT} = $Hang->sockport;
}
use Test::Nginx::Socket;
plan tests => 12;
run_tests();
__DATA__

=== TEST 1: passing control
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /t
--- response_body
ok

=== TEST 2: wrong body
--- config
    location = /t { return 200 "actual\n"; }
--- request
GET /t
--- response_body
expected

=== TEST 3: wrong status, missing error_log line, unwanted [error]
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /nope
--- error_log
this line never appears
--- no_error_log
[error]

=== TEST 4: invalid nginx config
--- config
    location = /t { this_is_not_a_directive; }
--- request
GET /t
--- response_body
ok

=== TEST 5: upstream never answers
--- config
    location = /t {
        proxy_read_timeout 2s;
        proxy_pass http://127.0.0.1:$TEST_NGINX_HANG_PORT;
    }
--- request
GET /t
--- timeout: 0.5
EOT

my ($status, $out) = run_cmd(@perl, "$tmp/failing.t");
note $out;
isnt $status, 0, 'failing file exits non-zero';
like $out, qr/^1\.\.12$/m, 'plan line printed';
is scalar(() = $out =~ /^(?:not )?ok \d+/mg), 12, 'failures keep the planned assertion count';
like $out, qr/^ok \d+ - \S+ TEST 1: passing control - status code ok$/m, 'control status ok';
like $out, qr/^ok \d+ - \S+ TEST 1: passing control - response_body - response is expected/m,
    'control body ok';
like $out, qr/^not ok \d+ - \S+ TEST 2: wrong body - response_body/m, 'wrong body fails';
like $out, qr/^not ok \d+ - \S+ TEST 3: .* - status code ok$/m, 'wrong status fails';
like $out, qr/^not ok \d+ - .*TEST 3: .*pattern "this line never appears" should match a line in error\.log/m,
    'missing error_log line fails';
like $out, qr/^not ok \d+ - .*TEST 3: .*pattern "\[error\]" should not match any line in error\.log/m,
    'unwanted no_error_log line fails';
like $out, qr/^not ok \d+ - .*TEST 4: invalid nginx config - nginx failed to start/m,
    'nginx startup failure is a failed test';
like $out, qr/unknown directive "this_is_not_a_directive"/, '... showing nginx\'s error';
is scalar(() = $out =~ /^ok \d+ # skip .*TEST 4/mg), 2, '... and the block\'s checks are skipped';
like $out, qr/^not ok \d+ - ERROR: client socket timed out - .*TEST 5/m, 'request timeout fails';
ok !-f "$tmp/servroot/logs/nginx.pid", 'nginx stopped at exit (no pid file)';
ok !IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp'),
    'nginx stopped at exit (port closed)';

# --- prove agrees: FAIL for the failing file, PASS for a good one -----------
write_file("$tmp/passing.t", <<'EOT');
use Test::Nginx::Socket 'no_plan';
run_tests();
__DATA__

=== TEST 1: fine
--- config
    location = /t { return 200 "fine\n"; }
--- request
GET /t
--- response_body
fine
EOT

my ($prove) = grep { -x } map { "$_/prove" } split(/:/, $ENV{PATH} // ''), '/usr/bin';
SKIP: {
    skip 'prove not found', 4 unless $prove;
    local $ENV{HARNESS_PERL_SWITCHES} = "-I$fallback -I$compat -MIngressLbFallback";
    ($status, $out) = run_cmd($^X, $prove, "$tmp/failing.t");
    isnt $status, 0, 'prove exits non-zero for the failing file';
    like $out, qr/^Result: FAIL$/m, 'prove reports FAIL';
    ($status, $out) = run_cmd($^X, $prove, "$tmp/passing.t");
    is $status, 0, 'prove exits 0 for the passing file' or diag $out;
    like $out, qr/^Result: PASS$/m, 'prove reports PASS';
}

# --- IngressLbFallback appends, never shadows --------------------------------
($status, $out) = run_cmd($^X, "-I$compat", '-MIngressLbFallback', '-e', 'print $INC[-1]');
is $out, $fallback, 'fallback dir is appended at the end of @INC';

mkdir "$tmp/realinc";
mkdir "$tmp/realinc/Test";
mkdir "$tmp/realinc/Test/Nginx";
write_file("$tmp/realinc/Test/Nginx/Socket.pm", "package Test::Nginx::Socket; 1;\n");
($status, $out) = run_cmd($^X, "-I$tmp/realinc", "-I$compat", '-MIngressLbFallback', '-e',
    'require Test::Nginx::Socket; print $INC{"Test/Nginx/Socket.pm"}');
is $out, "$tmp/realinc/Test/Nginx/Socket.pm", 'another Test::Nginx::Socket in @INC wins';

done_testing();
