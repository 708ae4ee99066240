package Test::Nginx::Socket;

# A small fallback implementation of the Test::Nginx::Socket API of
# openresty/test-nginx, used only when the real module is not installed (see
# t/compat/IngressLbFallback.pm and t/compat/README.md).  It follows the real
# module's behaviour for the subset of sections our suites use: one fresh
# nginx per block, requests over a plain socket, Test::More assertions with
# the same names and the same count per block, so that
# "plan tests => repeat_each() * (blocks() * N)" means the same thing.

use 5.010001;
use strict;
use warnings;

# Like the real module, this is a Test::Base subclass: blocks(), plan(),
# filters (eval, chomp, ...) and the Test::More functions come from it.
# ("-base", not "-Base": no Spiffy source filter on this file.)
use Test::Base -base;

use File::Glob qw(bsd_glob);
use File::Path qw(make_path remove_tree);
use File::Spec ();
use HTTP::Response ();
use IO::Select ();
use IO::Socket::INET ();
use List::Util qw(shuffle);
use POSIX qw(EAGAIN EINTR WNOHANG);
use Time::HiRes ();

our $VERSION = '0.29_ingress_lb_fallback';
our $IsFallback = 1;

our @EXPORT = qw(
    env_to_nginx is_str run_tests run_test repeat_each config_preamble
    worker_connections master_process_enabled no_long_string workers
    master_on master_off log_level no_shuffle no_root_location use_hup
    server_name server_addr server_root servroot html_dir server_port
    server_port_for_client timeout no_nginx_manager check_accum_error_log
    add_block_preprocessor bail_out add_cleanup_handler
    add_response_body_check
);

# ---------------------------------------------------------------------------
# Settings: same environment variables and defaults as the real module.
# ---------------------------------------------------------------------------

sub default_nginx_binary {
    for my $dir (split /:/, $ENV{PATH} // '') {
        return 'nginx' if $dir ne '' && -x "$dir/nginx";
    }
    return '/usr/sbin/nginx';
}

our $ServerAddr          = '127.0.0.1';   # we only ever listen on loopback
our $ServerName          = 'localhost';
our $ServerPort          = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT};   # undef: $ServerPort
our $NginxBinary         = $ENV{TEST_NGINX_BINARY} || default_nginx_binary();
our $LoadModules         = $ENV{TEST_NGINX_LOAD_MODULES} // '';
our $Timeout             = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $TestNginxSleep      = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $LogLevel            = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $NoShuffle           = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $CheckAccumErrLog    = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $WorkerUser          = $ENV{TEST_NGINX_WORKER_USER};
our $Randomize           = $ENV{TEST_NGINX_RANDOMIZE};
our ($Workers, $WorkerConnections, $RepeatEach) = (1, 64, 1);
our ($NoRootLocation, $NoLongString, $NoNginxManager) = (0, 0, 0);
our $ConfigPreamble = '';
our (@EnvToNginx, @BlockPreprocessors, @CleanupHandlers, @ResponseBodyChecks);
our ($NginxVersion, $ErrLogFilePos, $NginxPid);
my $ParentPid = $$;

if ($Randomize) {
    $ServerPort = gen_rand_port(1000)
        or die "Cannot find an available listening port number\n";
}

our $ServRoot = File::Spec->rel2abs($Randomize ? "t/servroot_$ServerPort"
                                    : $ENV{TEST_NGINX_SERVROOT} || 't/servroot');
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
our $LogDir     = "$ServRoot/logs";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $ConfFile   = "$ConfDir/nginx.conf";
our $PidFile    = "$LogDir/nginx.pid";

my $HaveLongString = eval { require Test::LongString; 1 };

# ---------------------------------------------------------------------------
# Public API (getters/setters), same names and prototypes as the real one.
# ---------------------------------------------------------------------------

sub repeat_each (@)        { $RepeatEach = shift if @_; $RepeatEach }
sub workers (@)            { @_ ? ($Workers = shift) : $Workers }
sub worker_connections (@) { @_ ? ($WorkerConnections = shift) : $WorkerConnections }
sub log_level (@)          { @_ ? ($LogLevel = shift) : $LogLevel }
sub timeout (@)            { @_ ? ($Timeout = shift) : $Timeout }
sub server_addr (@)        { @_ ? ($ServerAddr = shift) : $ServerAddr }
sub server_name (@)        { @_ ? ($ServerName = shift) : $ServerName }
sub server_port (@)        { @_ ? ($ServerPort = shift) : $ServerPort }
sub server_port_for_client (@) {
    @_ ? ($ServerPortForClient = shift) : ($ServerPortForClient // $ServerPort);
}
sub master_on ()           { $MasterProcessEnabled = 'on' }
sub master_off ()          { $MasterProcessEnabled = 'off' }
sub master_process_enabled (@) {
    return $MasterProcessEnabled unless @_;
    $MasterProcessEnabled = shift() ? 'on' : 'off';
}
sub no_shuffle ()            { $NoShuffle = 1 }
sub no_long_string ()        { $NoLongString = 1 }
sub no_root_location ()      { $NoRootLocation = 1 }
sub no_nginx_manager ()      { $NoNginxManager = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub use_hup ()               { }    # HUP-reload mode is not supported: no-op
sub config_preamble ($)      { $ConfigPreamble = shift }
sub html_dir ()              { $HtmlDir }
sub server_root ()           { $ServRoot }
sub servroot ()              { $ServRoot }   # alias; the real module has only server_root()
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub add_cleanup_handler ($)    { unshift @CleanupHandlers, shift }
sub add_response_body_check ($) { push @ResponseBodyChecks, shift }

sub env_to_nginx (@) {
    die "env_to_nginx: no arguments specified\n" unless @_;
    for my $v (@_) {
        die "env_to_nginx: bad argument value: $v\n" if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

# String comparison used for bodies: Test::LongString when available (as the
# real module does), else Test::Base's is(), which prints a diff.
sub is_str (@) {
    my ($got, $expected, $desc) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return like($got, $expected, $desc) if ref $expected && ref $expected eq 'Regexp';
    return Test::More::is($got, $expected, $desc) if $NoLongString;
    return Test::LongString::is_string($got, $expected, $desc) if $HaveLongString;
    return Test::Base::is($got, $expected, $desc);
}

sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(join '', @_);
}

# ---------------------------------------------------------------------------
# nginx process management
# ---------------------------------------------------------------------------

# True while the process exists.  A zombie whose threads have all exited
# counts as gone: the daemonized nginx is reparented to PID 1, which may take
# a while to reap it.
sub is_running {
    my $pid = shift;
    return 0 unless $pid && kill(0, $pid);
    my $status = slurp("/proc/$pid/status");
    return 1 if $status !~ /^State:\s*Z/m;
    return ($status =~ /^Threads:\s*(\d+)/m ? $1 : 1) > 1;
}

# Wait (a little) until nobody listens on our port any more.
sub wait_port_free {
    for (1 .. 150) {
        my $sock = IO::Socket::INET->new(LocalAddr => $ServerAddr, LocalPort => $ServerPort,
                                         Proto => 'tcp', ReuseAddr => 1, Listen => 1);
        if ($sock) { close $sock; return }
        Time::HiRes::sleep(0.02);
    }
}

sub read_pid {
    open my $in, '<', $PidFile or return undef;
    my $pid = <$in> // '';
    close $in;
    $pid =~ s/\s+//g;
    return $pid =~ /^\d+$/ ? $pid : undef;
}

sub slurp {
    my $file = shift;
    open my $in, '<', $file or return '';
    local $/;
    my $data = <$in> // '';
    close $in;
    return $data;
}

sub canon_version { sprintf "%d.%03d%03d", @_[0 .. 2] }

sub nginx_version {
    return $NginxVersion if defined $NginxVersion;
    my $out = `$NginxBinary -V 2>&1`;
    if ($? != 0 || $out !~ m{(?:nginx|openresty)[^/]*/(\d+)\.(\d+)\.(\d+)}) {
        bail_out("Failed to get the version of the nginx binary \"$NginxBinary\""
                 . " (set TEST_NGINX_BINARY): $out");
    }
    return $NginxVersion = canon_version($1, $2, $3);
}

# Graceful stop (SIGQUIT), then SIGKILL to the whole process group (the
# daemonized nginx is a session leader, so this also gets its workers).
sub kill_nginx {
    my ($pid, $name) = @_;
    kill 'QUIT', $pid;
    for (my $t = $Timeout; $t > 0 && is_running($pid); $t -= 0.02) {
        waitpid($pid, WNOHANG);
        Time::HiRes::sleep(0.02);
    }
    return unless is_running($pid);
    warn "$name - WARNING: nginx $pid did not quit in ${Timeout}s, killing it\n";
    kill 'KILL', getpgrp($pid) == $pid ? -$pid : $pid;
    for (1 .. 100) { last unless is_running($pid); Time::HiRes::sleep(0.02) }
}

# Stops the nginx we started, and whatever the pid file names (a leftover of
# an earlier, interrupted run), as the real module does.
sub stop_nginx {
    my $name = shift // '';
    for my $pid ($NginxPid, read_pid()) {
        kill_nginx($pid, $name) if is_running($pid);
    }
    undef $NginxPid;
    unlink $PidFile;
}

# Start nginx (daemon mode, like the real module).  Returns undef on success
# or an error message with nginx's own stderr output.
sub start_nginx {
    my $name = shift;
    my $errfile = "$LogDir/nginx.stderr";
    wait_port_free();
    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-c', $ConfFile);
    my $pid = fork // return "fork() failed: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $errfile;
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        print STDERR "cannot exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    waitpid($pid, 0);
    if ($? != 0) {
        return sprintf "command \"%s\" failed (exit status %d):\n%s",
            "@cmd", $? >> 8, slurp($errfile);
    }
    # the daemonized process writes the pid file after the parent exits
    for (1 .. 300) {
        if (is_running($NginxPid = read_pid())) {
            Time::HiRes::sleep($TestNginxSleep);
            return undef;
        }
        Time::HiRes::sleep(0.01);
    }
    my @tail = (split /\n/, slurp($ErrLogFile))[-20 .. -1];
    return "nginx exited right after startup; last lines of $ErrLogFile:\n"
        . join("\n", grep { defined } @tail) . "\n" . slurp($errfile);
}

sub cleanup {
    $_->() for @CleanupHandlers;
}

END { end_cleanup() }

sub end_cleanup {
    return if $$ != $ParentPid;
    local $?;    # keep Test::Builder's exit code
    cleanup();
    stop_nginx('END') unless $ENV{TEST_NGINX_NO_CLEAN};
    remove_tree($ServRoot) if $Randomize && $ServRoot =~ m{/t/servroot_\d+$};
}

# Make Ctrl-C / kill run the END cleanup (and so stop nginx).
for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub { warn "caught SIG$sig, stopping nginx\n"; exit 1 }
        if !$SIG{$sig} || $SIG{$sig} eq 'DEFAULT';
}

# ---------------------------------------------------------------------------
# Server root and nginx.conf
# ---------------------------------------------------------------------------

sub parse_time {
    my $tm = shift;
    return undef unless defined $tm;
    return $1 / 1000 if $tm =~ /^\s*([\d.]+)\s*ms\s*$/;
    return $1 if $tm =~ /^\s*([\d.]+)\s*s?\s*$/;
    return $tm;
}

# Random free loopback port in [1985, 65535), avoiding ports in %$used.
sub gen_rand_port {
    my ($tries, $used) = @_;
    for (1 .. $tries // 1000) {
        my $port = int(rand 63550) + 1985;
        next if $used && $used->{$port};
        # ingress-nginx's controller status port: balancer.lua refuses to proxy to
        # 127.x:10246 (a self-proxy guard), so a backend must never get it.
        next if $port == 10246;
        my $sock = IO::Socket::INET->new(LocalAddr => $ServerAddr,
            LocalPort => $port, Proto => 'tcp') or next;
        close $sock;
        return $port;
    }
    return undef;
}

# Replace $TEST_NGINX_FOO with $ENV{TEST_NGINX_FOO} (bail out if unset);
# $TEST_NGINX_RAND_PORT_N gets a free random port, the same one for the
# whole block (all of its config sections and user files).
sub expand_env_in_text {
    my ($text, $name, $rand_ports) = @_;
    return $text unless defined $text;
    my %used = ($ServerPort => 1, map { $_ => 1 } values %$rand_ports);
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        if ($var =~ /^TEST_NGINX_RAND_PORT_[0-9]+$/) {
            $rand_ports->{$var} //= do {
                my $port = gen_rand_port(1000, \%used)
                    // bail_out("$name - Cannot find an available listening port number for $var.\n");
                $used{$port} = 1;
                $port;
            };
        } else {
            $ENV{$var} // bail_out("$name - No environment $var defined.\n");
        }
    }eg;
    return $text;
}

sub setup_server_root {
    # Remove only what we create, never a whole (possibly mis-set) servroot.
    remove_tree($ConfDir, $HtmlDir, $LogDir,
                bsd_glob("$ServRoot/*_temp"), bsd_glob("$ServRoot/*_cache"));
    make_path($ServRoot, $LogDir, $HtmlDir, $ConfDir);
    open my $out, '>', "$HtmlDir/index.html"
        or bail_out("Can't open $HtmlDir/index.html for writing: $!\n");
    print $out '<html><head><title>It works!</title></head><body>It works!</body></html>';
    close $out;
}

# --- user_files: ">>> name [touch-date]" headers, each followed by the body.
sub write_user_files {
    my ($block, $rand_ports) = @_;
    my $name = $block->name;
    my $files = $block->user_files or return;
    if (!ref $files) {
        my @list;
        for my $line (split /^/, $files) {
            if ($line =~ />>> (\S+)(?:\s+(.+))?/) {
                push @list, [$1, undef, $2];
            } elsif (@list) {
                $list[-1][1] .= $line;
            }
        }
        $files = \@list;
    } elsif (ref $files ne 'ARRAY') {
        bail_out("$name - wrong value type: ", ref $files,
                 ", only scalar or ARRAY are accepted");
    }
    for my $file (@$files) {
        my ($fname, $body, $date) = @$file;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        make_path($1) if $path =~ m{(.*)/} && !-d $1;
        open my $out, '>', $path
            or bail_out("$name - Cannot open $path for writing: $!\n");
        binmode $out;
        print $out expand_env_in_text($body // '', $name, $rand_ports);
        close $out;
        if ($date) {
            local $ENV{TZ} = 'GMT';
            system('touch', '-t', $date, $path) == 0
                or bail_out("$name - Failed to touch -t '$date' $path\n");
        }
    }
}

sub write_config_file {
    my ($block, $config, $rand_ports) = @_;
    my $name = $block->name;
    my $http_config = expand_env_in_text($block->http_config // '', $name, $rand_ports);
    my $main_config = expand_env_in_text($block->main_config // '', $name, $rand_ports);
    my $post_main_config = expand_env_in_text($block->post_main_config // '', $name, $rand_ports);
    my $server_name = $block->server_name // $ServerName;

    # Keep nginx's temp dirs inside the server root (Debian's defaults are in
    # /var/lib/nginx), unless the test configures them itself.
    my $temp_paths = '';
    for my $kind (qw(client_body proxy fastcgi uwsgi scgi)) {
        next if "$http_config\n$config\n$ConfigPreamble" =~ /\b${kind}_temp_path\b/;
        $temp_paths .= "    ${kind}_temp_path $ServRoot/${kind}_temp;\n";
    }

    my $modules = join '', map { "load_module $_;\n" } grep { length } split /\s+/, $LoadModules;
    my $env = join '', map { my $v = /\s/ ? "'$_'" : $_; "env $v;\n" } @EnvToNginx;
    my $root_location = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_
    # As root, the real module runs workers as root too (they must be able to
    # use the files the test created).
    my $user = defined $WorkerUser ? "user $WorkerUser;\n" : $> == 0 ? "user root;\n" : '';

    open my $out, '>', $ConfFile or bail_out("Can't open $ConfFile for writing: $!\n");
    print $out <<"_EOC_";
${modules}worker_processes  $Workers;
daemon on;
master_process $MasterProcessEnabled;
error_log $ErrLogFile $LogLevel;
pid       $PidFile;
$env
$main_config

http {
    access_log $AccLogFile;
    default_type text/plain;
    keepalive_timeout  68;
$temp_paths
$http_config

    server {
        listen          $ServerAddr:$ServerPort;
        server_name     '$server_name';

        client_max_body_size 30M;

        # Begin preamble config...
$ConfigPreamble
        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

$root_location    }
}

$post_main_config

events {
    accept_mutex off;
    worker_connections  $WorkerConnections;
}
$user
_EOC_
    close $out;
}

# ---------------------------------------------------------------------------
# Running the blocks
# ---------------------------------------------------------------------------

sub run_tests () {
    nginx_version();    # bail out early when the nginx binary is unusable
    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort
        if $Randomize || !defined $ENV{TEST_NGINX_SERVER_PORT};
    for my $block ($NoShuffle ? Test::Base::blocks() : shuffle(Test::Base::blocks())) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_test($block);
    }
    cleanup();
}

# "--- skip_nginx: N: < 1.2.3 [: reason]" and "--- skip_eval: N: perl-code".
sub skip_spec {
    my $block = shift;
    my $name = $block->name;
    my @skip = (0);
    if (defined(my $spec = $block->skip_eval)) {
        if ($spec =~ /^\s*(\d+)\s*:\s*(.*)/s) {
            my ($n, $code) = ($1, $2);
            my $yes = eval $code;
            bail_out("$name - skip_eval - failed to eval the Perl code \"$code\": $@") if $@;
            @skip = (1, $n, 'skip_eval') if $yes;
        }
    }
    if (defined(my $spec = $block->skip_nginx)) {
        $spec =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)(?:\s*:\s*(.*))?\s*$/
            or bail_out("$name - Invalid --- skip_nginx spec: $spec");
        my ($n, $op, @v) = ($1, $2, $3, $4, $5);
        my $reason = $6 || "nginx version $op " . join('.', @v);
        my $ver = canon_version(@v);
        @skip = (1, $n, $reason) if eval "nginx_version() $op $ver";
    }
    return @skip;
}

sub run_test ($) {
    my $block = shift;
    return if defined $block->SKIP;
    my $name = $block->name;
    my $rand_ports = {};
    my $config = expand_env_in_text($block->config // '', $name, $rand_ports);
    my $log_level = $block->log_level || $LogLevel;
    local $LogLevel = $log_level;
    my ($should_skip, $tests_to_skip, $skip_reason) = skip_spec($block);

    # A fresh nginx (and server root) for every block.
    my $dry_run = 0;
    if (!$should_skip && !$NoNginxManager) {
        stop_nginx($name);
        setup_server_root();
        write_user_files($block, $rand_ports);
        write_config_file($block, $config, $rand_ports);
        if (defined(my $err = start_nginx($name))) {
            fail("$name - nginx failed to start: $err");
            # every check of this block is then reported as skipped
            $dry_run = 'the nginx startup failure';
        }
    }

    if ($block->init) {
        eval $block->init;
        bail_out("$name - init failed: $@") if $@;
    }

    $ErrLogFilePos = 0;
    for my $i (1 .. $RepeatEach) {
        if ($should_skip) {
            SKIP: { skip("$name - $skip_reason", $tests_to_skip) }
            next;
        }
        write_user_files($block, $rand_ports) if $i > 1 && !$NoNginxManager;
        run_test_helper($block, $dry_run, $i - 1);
    }
}

# Pick element $idx of an "eval" array, insisting on arrays when the block
# sends several requests (as the real module does).
sub get_indexed_value {
    my ($name, $value, $idx, $need_array) = @_;
    if (ref $value && ref $value eq 'ARRAY') {
        bail_out("$name - SHOULD NOT HAPPEN: idx != 0 and don't need array.")
            if !$need_array && $idx != 0;
        return $value->[$idx];
    }
    bail_out("$name - You asked for many requests, the expected results should be arrays as well.")
        if $need_array;
    return $value;
}

sub run_test_helper {
    my ($block, $dry_run, $rep) = @_;
    my $name = $block->name;
    my $reqs = get_requests($block);
    my $timeout = parse_time($block->timeout) // $Timeout;
    my $pipelined = $block->pipelined_requests ? scalar @{ $block->pipelined_requests } : 0;
    my $total = $pipelined || @$reqs;
    my $need_array = $pipelined ? 1 : @$reqs > 1;

    my $idx = 0;
    for my $req (@$reqs) {
        my ($raw, $head_req) = $dry_run
            ? ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" x ($pipelined || 1), 0)
            : send_request($req, $timeout, $block);
        # pipelined: all responses arrive on one connection, one after another
        for (1 .. ($pipelined || 1)) {
            if (!defined $block->ignore_response) {
                my ($res, $raw_headers, $left) = parse_response($name, $raw, $head_req);
                if ($pipelined) {
                    $raw = $left // '';
                } elsif (defined $left && length $left) {
                    warn "WARNING: $name - unexpected extra bytes after the response: \"",
                        fmt_str($left), "\"\n";
                }
                check_error_code($block, $res, $dry_run, $idx, $need_array);
                check_raw_response_headers($block, $raw_headers, $dry_run, $idx, $need_array);
                check_response_headers($block, $res, $raw_headers, $dry_run, $idx, $need_array);
                check_response_body($block, $res, $dry_run, $idx, $rep, $need_array);
            }
            # the real module also checks the logs between requests
            if ($idx < $total - 1) {
                Time::HiRes::sleep(parse_time($block->wait)) if $block->wait;
                check_error_log($block, $dry_run, $rep);
                check_access_log($block, $dry_run, $rep) unless defined $block->ignore_response;
            }
            $idx++;
        }
    }
    Time::HiRes::sleep(parse_time($block->wait)) if $block->wait;
    check_error_log($block, $dry_run, $rep);
    check_access_log($block, $dry_run, $rep) unless defined $block->ignore_response;
}

# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

sub parse_more_headers {
    my $in = shift // '';
    my ($out, $chunked) = ('', 0);
    for my $header (split /\n+/, $in) {
        next if $header =~ /^\s*#/;
        my ($key, $val) = split /:\s*/, $header, 2;
        $val //= '';
        $chunked = 1 if lc $key eq 'transfer-encoding' && $val eq 'chunked';
        $out .= "$key: $val\r\n";
    }
    return ($out, $chunked);
}

# "METHOD [URL [VERSION]]\nbody" -> raw HTTP request.  Like the real module:
# adds Host and Connection unless given, and a Content-Length for a body (the
# body is then trimmed) unless chunked or given in --- more_headers.
sub build_request {
    my ($name, $more, $chunked, $conn, $req) = @_;
    my ($first, $content) = ($req // '') =~ /\A([^\n]*\n?)(.*)\z/s;
    my ($meth, $url, $ver) = $first =~ /^\s*(\S+) *(?:(\S+) *)?(?:(\S+) *)?\s*$/
        or bail_out("$name - Request line is not valid. Should be 'meth [url [version]]' but got \"$first\".");
    $url //= '/';
    $ver //= 'HTTP/1.1';
    my $len = '';
    if (!$chunked && $content ne '' && $more !~ /(?:^|\n)Content-Length:/) {
        $content =~ s/^\s+|\s+$//gs;
        $len = 'Content-Length: ' . length($content) . "\r\n";
    }
    $more =~ s/(?<!\r)\n/\r\n/g;
    my $headers = '';
    $headers .= "Host: $ServerName\r\n" if $more !~ /(?:^|\n)Host:/msi;
    $headers .= "Connection: $conn\r\n" if $more !~ /(?:^|\n)Connection/msi;
    return "$meth $url $ver\r\n$headers$more$len\r\n$content";
}

# Returns the list of raw requests to send (pipelined ones as one string).
sub get_requests {
    my $block = shift;
    my $name = $block->name;
    if (defined(my $raw = $block->raw_request)) {
        return [ref $raw eq 'ARRAY' ? join('', @$raw) : $raw];
    }
    my $more = $block->more_headers || '';
    my $headers_for = sub {
        my $i = shift;
        my $h = $more;
        if (ref $h eq 'ARRAY') {
            $h = $h->[$i] // bail_out("--- more_headers lacks data for the ${i}th request");
        }
        return parse_more_headers($h);
    };
    if (defined(my $reqs = $block->pipelined_requests)) {
        bail_out("$name - invalid entries in --- pipelined_requests") if ref $reqs ne 'ARRAY';
        my $all = '';
        for my $i (0 .. $#$reqs) {
            $all .= build_request($name, $headers_for->($i),
                                  $i == $#$reqs ? 'close' : 'keep-alive', $reqs->[$i]);
        }
        return [$all];
    }
    my $request = $block->request;
    bail_out("$name - Request line should be non-empty") unless defined $request;
    if (!ref $request) {
        1 while $request =~ s/^\s*\#[^\n]+\s+|^\s+//gs;   # leading comments/space
        return [build_request($name, $headers_for->(0), 'close', $request)];
    }
    bail_out("$name - invalid ---request : MUST be string or array of requests")
        if ref $request ne 'ARRAY';
    my @out;
    for my $i (0 .. $#$request) {
        my $one = $request->[$i];
        if (ref $one eq 'ARRAY') {   # packets: sent in one go (no delays)
            $one = join '', map { ref $_ eq 'HASH' ? $_->{value} : $_ } @$one;
        } elsif (ref $one) {
            bail_out("$name - Invalid syntax. $one should be a string or an array of packets.");
        }
        push @out, build_request($name, $headers_for->($i), 'close', $one);
    }
    return \@out;
}

# Send one raw request and read until the server closes the connection.
# $timeout is an inactivity timeout, as in the real module.
sub send_request {
    my ($req, $timeout, $block) = @_;
    my $name = $block->name;
    my $head_req = $req =~ /^\s*HEAD\s+/ ? 1 : 0;
    my $addr = $block->server_addr_for_client // $ServerAddr;
    my $port = server_port_for_client();

    my $sock;
    for my $try (1 .. 50) {
        $sock = IO::Socket::INET->new(PeerAddr => $addr, PeerPort => $port,
                                      Proto => 'tcp', Timeout => $timeout) and last;
        last if $try > 3 && !$NoNginxManager && !is_running($NginxPid // read_pid());  # nginx is gone
        my $wait = ($TestNginxSleep + $TestNginxSleep * $try) * $try / 2;
        Time::HiRes::sleep($wait > 1 ? 1 : $wait);
    }
    if (!$sock) {
        fail("$name - Can't connect to $addr:$port: $! (aborted)");
        return ('', $head_req);
    }

    local $SIG{PIPE} = 'IGNORE';
    $sock->blocking(0);
    my $sel = IO::Select->new($sock);
    my ($off, $resp) = (0, '');
    while (1) {
        my $writing = $off < length $req;
        $! = 0;
        my ($r, $w) = IO::Select->select($sel, $writing ? $sel : undef, undef, $timeout);
        if (!$r && !$w) {
            next if $! == EINTR;
            fail("ERROR: client socket timed out - $name") unless defined $block->abort;
            last;
        }
        if ($w && @$w) {
            my $n = syswrite($sock, $req, length($req) - $off, $off);
            if (defined $n) {
                $off += $n;
                if ($off >= length $req && defined(my $how = $block->shutdown)) {
                    shutdown($sock, $how =~ /^\s*$/ ? 1 : $how);
                }
            } elsif ($! != EAGAIN) {
                warn "WARNING: $name - write failed: $!\n";
                $off = length $req;
            }
        }
        if ($r && @$r) {
            my $n = sysread($sock, my $buf, 65536);
            if (!defined $n) {
                next if $! == EAGAIN;
                warn "WARNING: $name - HTTP response read failure: $!\n";
                last;
            }
            last if $n == 0;    # server closed the connection
            $resp .= $buf;
        }
    }
    close $sock;
    return ($resp, $head_req);
}

# Parse one response off the front of $raw; returns ($res, $raw_headers,
# $left) where $left is what follows it (the next pipelined response).
sub parse_response {
    my ($name, $raw, $head_req) = @_;
    my $raw_headers = $raw =~ /(.*?\r\n)\r\n/s ? $1 : '';
    my $res = HTTP::Response->parse($raw);
    my $code = $res->code;
    $res->code(undef) if defined $code && $code !~ /^\d+$/;
    return ($res, $raw_headers) if $code && ($code == 304 || $code == 101);

    my $enc = $res->header('Transfer-Encoding');   # scalar context: joined values
    my $len = $res->header('Content-Length');
    my $left;
    if (defined $enc && $enc eq 'chunked') {
        my $body = $res->content // '';
        my $decoded = '';
        while (1) {
            if ($body =~ /\G0[ \t]*\r\n\r\n/gc) {
                $left = substr($body, pos $body) if pos($body) < length $body;
                last;
            }
            if ($body =~ /\G[ \t]*([A-Fa-f0-9]+)[ \t]*\r\n/gc) {
                my ($size, $p) = (hex $1, pos $body);
                if (length($body) < $p + $size + 2 || substr($body, $p + $size, 2) ne "\r\n") {
                    fail("$name - invalid chunked data received");
                    return (undef, $raw_headers);
                }
                $decoded .= substr($body, $p, $size);
                pos($body) = $p + $size + 2;
            } else {
                fail("$name - invalid chunked body or no last chunk found: \""
                     . fmt_str(substr($body, pos($body) // 0)) . '"');
                return (undef, $raw_headers);
            }
        }
        $res->content($decoded);
    } elsif (defined $len && $len =~ /^\s*\d+\s*$/) {
        my $body = $res->content // '';
        if (length $body < $len) {
            warn "WARNING: $name - response body truncated: $len expected, but got ",
                length $body, "\n" unless $head_req;
        } elsif (length $body > $len) {
            $left = substr($body, $len);
            $res->content(substr($body, 0, $len));
        }
    }
    return ($res, $raw_headers, $left);
}

# ---------------------------------------------------------------------------
# Checks.  Each one produces exactly one assertion (per header / per log
# pattern), reported as skipped when the block runs "dry".
# ---------------------------------------------------------------------------

sub check_or_skip {
    my ($dry_run, $desc, $code) = @_;
    if ($dry_run) {
        Test::More->builder->skip("$desc - tests skipped due to $dry_run");
        return;
    }
    local $Test::Builder::Level = $Test::Builder::Level + 2;
    $code->();
}

sub subst_port {
    my $s = shift;
    return $s if !defined $s || ref $s;
    my $client_port = server_port_for_client();
    $s =~ s/\$ServerPortForClient\b/$client_port/g;
    $s =~ s/\$ServerPort\b/$ServerPort/g;
    return $s;
}

sub check_error_code {
    my ($block, $res, $dry_run, $idx, $need_array) = @_;
    my $name = $block->name;
    my $code = ($res && $res->code) || '';
    check_or_skip($dry_run, "$name - status code ok", sub {
        if (defined $block->error_code_like) {
            my $pat = get_indexed_value($name, $block->error_code_like, $idx, $need_array);
            like($code, qr/$pat/sm, "$name - status code ok");
        } else {
            my $expected = defined $block->error_code
                ? get_indexed_value($name, $block->error_code, $idx, $need_array) : 200;
            Test::More::is($code, $expected, "$name - status code ok");
        }
    });
}

sub check_raw_response_headers {
    my ($block, $raw_headers, $dry_run, $idx, $need_array) = @_;
    my $name = $block->name;
    for my $type (qw(like unlike)) {
        my $pat = $block->${\"raw_response_headers_$type"};
        next unless defined $pat;
        $pat = get_indexed_value($name, $pat, $idx, $need_array);
        my $desc = "$name - raw resp headers $type";
        check_or_skip($dry_run, $desc, sub {
            $type eq 'like' ? like($raw_headers, qr/$pat/s, $desc)
                            : unlike($raw_headers, qr/$pat/s, $desc);
        });
    }
}

# "Name: value" lines; "!Name" (or a bare "Name") means "must be absent".
sub parse_headers {
    my @pairs;
    for my $line (split /\n/, shift // '') {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '';
        if ($line =~ s/^!\s*//) {
            push @pairs, [$line, undef];
        } else {
            push @pairs, [split /\s*:\s*/, $line, 2];
        }
    }
    return @pairs;
}

sub check_response_headers {
    my ($block, $res, $raw_headers, $dry_run, $idx, $need_array) = @_;
    my $name = $block->name;
    if (defined $block->response_headers) {
        for my $h (parse_headers(get_indexed_value($name, $block->response_headers, $idx, $need_array))) {
            my ($key, $val) = @$h;
            if (!defined $val) {
                my $desc = "$name - header $key not present in the raw headers";
                check_or_skip($dry_run, $desc, sub {
                    unlike($raw_headers // '', qr/^\s*\Q$key\E\s*:/ms, $desc);
                });
                next;
            }
            my $actual = ($res ? $res->header($key) : undef) // '';
            check_or_skip($dry_run, "$name - header $key ok", sub {
                Test::More::is($actual, subst_port($val), "$name - header $key ok");
            });
        }
    } elsif (defined $block->response_headers_like) {
        for my $h (parse_headers(get_indexed_value($name, $block->response_headers_like, $idx, $need_array))) {
            my ($key, $val) = ($h->[0], $h->[1] // '');
            my $actual = ($res ? $res->header($key) : undef) // '';
            check_or_skip($dry_run, "$name - header $key like ok", sub {
                like($actual, qr/^$val$/, "$name - header $key like ok");
            });
        }
    }
}

sub trim {
    my $s = shift;
    return undef unless defined $s;
    $s =~ s/^\s+|\s+$//g;
    $s =~ s/\s+/ /g;
    return $s;
}

sub fmt_str {
    my $s = shift // '';
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

sub check_response_body {
    my ($block, $res, $dry_run, $idx, $rep, $need_array) = @_;
    my $name = $block->name;
    my $content = $res ? $res->content : undef;
    if (defined $block->response_body) {
        my $expected = subst_port(get_indexed_value($name, $block->response_body, $idx, $need_array));
        my $desc = ref $expected
            ? "$name - response_body - like (repeated req $rep, req $idx)"
            : "$name - response_body - response is expected (repeated req $rep, req $idx)";
        check_or_skip($dry_run, $desc, sub {
            ref $expected ? like($content, $expected, $desc) : is_str($content, $expected, $desc);
        });
    } elsif (defined $block->response_body_like || defined $block->response_body_unlike) {
        my $type = defined $block->response_body_like ? 'like' : 'unlike';
        my $pat = $type eq 'like' ? $block->response_body_like : $block->response_body_unlike;
        $pat = subst_port(get_indexed_value($name, $pat, $idx, $need_array));
        my $desc = "$name - response_body_$type - response is expected ("
                   . (trim($content) // '') . ')';
        check_or_skip($dry_run, $desc, sub {
            $type eq 'like' ? like($content, qr/$pat/s, $desc) : unlike($content, qr/$pat/s, $desc);
        });
    }
    $_->($block, $content, $idx, $rep, $dry_run) for @ResponseBodyChecks;
}

# Lines appended to error.log since the previous read (the whole file with
# check_accum_error_log).  Sleeps a bit first, for log-phase handlers.
sub error_log_data {
    Time::HiRes::sleep($TestNginxSleep * 3);
    open my $in, '<', $ErrLogFile or return [];
    seek $in, $ErrLogFilePos, 0 if !$CheckAccumErrLog && $ErrLogFilePos;
    my @lines = <$in>;
    $ErrLogFilePos = tell $in unless $CheckAccumErrLog;
    close $in;
    return \@lines;
}

sub access_log_data {
    Time::HiRes::sleep($TestNginxSleep * 3);
    open my $in, '<', $AccLogFile or return [];
    my @lines = <$in>;
    close $in;
    return \@lines;
}

# A log pattern section: lines (substring match), a qr// or an eval array.
sub pattern_list {
    my $pats = shift;
    if (!ref $pats) {
        chomp $pats;
        return grep { length } split /\n+/, $pats;
    }
    return ref $pats eq 'Regexp' ? ($pats) : grep { defined } @$pats;
}

sub line_matches {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ $pat : index($line, $pat) >= 0;
}

# --- error_log / access_log: every pattern must match some line;
# --- no_error_log / no_access_log: no pattern may match any line.
sub check_log_patterns {
    my ($name, $file, $pats, $negate, $get_lines, $dry_run, $rep) = @_;
    for my $pat (pattern_list($pats)) {
        my $p = fmt_str($pat);
        if ($dry_run) {
            Test::More->builder->skip("$name - $file - tests skipped due to $dry_run");
            next;
        }
        my @hits = grep { line_matches($_, $pat) } @{ $get_lines->() };
        if (!$negate) {
            ok(scalar @hits, @hits
               ? "$name - pattern \"$p\" matches a line in $file (req $rep)"
               : "$name - pattern \"$p\" should match a line in $file (req $rep)");
        } elsif (!@hits) {
            pass("$name - pattern \"$p\" does not match a line in $file (req $rep)");
        } else {
            fail("$name - pattern \"$p\" should not match any line in $file but matches line \""
                 . fmt_str($_) . "\" (req $rep)") for @hits;
        }
    }
}

sub check_error_log {
    my ($block, $dry_run, $rep) = @_;
    my $name = $block->name;
    my $lines;
    my $get_lines = sub { $lines //= error_log_data() };

    my $grep = $block->grep_error_log;
    $grep = $grep->[$rep] if ref $grep eq 'ARRAY';
    if (defined $grep) {
        my $expected = $block->grep_error_log_out;
        bail_out("$name - No --- grep_error_log_out defined but --- grep_error_log is defined")
            unless defined $expected;
        $expected = $expected->[$rep] if ref $expected eq 'ARRAY';
        my $desc = "$name - grep_error_log_out (req $rep)";
        check_or_skip($dry_run, $desc, sub {
            my $out = '';
            for my $line (@{ $get_lines->() }) {
                next unless $line =~ (ref $grep ? $grep : qr/\Q$grep\E/);
                my $m = substr($line, $-[0], $+[0] - $-[0]);
                $out .= "$m\n" unless $m =~ /\n/;
            }
            ref $expected eq 'Regexp' ? like($out, $expected, $desc) : is_str($out, $expected, $desc);
        });
    } elsif (!defined $block->grep_error_log && defined $block->grep_error_log_out) {
        bail_out("$name - No --- grep_error_log defined but --- grep_error_log_out is defined");
    }

    check_log_patterns($name, 'error.log', $block->error_log, 0, $get_lines, $dry_run, $rep)
        if defined $block->error_log;
    check_log_patterns($name, 'error.log', $block->no_error_log, 1, $get_lines, $dry_run, $rep)
        if defined $block->no_error_log;
    return if $dry_run;

    # Like the real module: warn about serious log lines the test did not
    # ask about, and fail on assertion failures.
    my $asked = join "\n", map { ref $_ eq 'ARRAY' ? @$_ : $_ }
                           grep { defined } $block->error_log, $block->no_error_log;
    for my $what ('[alert', '[crit', '[emerg', 'writing a global lua variable') {
        next if index($asked, $what) >= 0;
        warn "WARNING: $name - ", fmt_str($_), "\n"
            for grep { index($_, $what) >= 0 } @{ $get_lines->() };
    }
    for my $line (@{ $get_lines->() }) {
        fail("$name - " . fmt_str($line)) if $line =~ /\bAssertion .*?failed\b/;
    }
}

sub check_access_log {
    my ($block, $dry_run, $rep) = @_;
    my $name = $block->name;
    my $lines;
    my $get_lines = sub { $lines //= access_log_data() };
    check_log_patterns($name, 'access.log', $block->access_log, 0, $get_lines, $dry_run, $rep)
        if defined $block->access_log;
    check_log_patterns($name, 'access.log', $block->no_access_log, 1, $get_lines, $dry_run, $rep)
        if defined $block->no_access_log;
}

1;
