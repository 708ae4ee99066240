package IngressLbFallback;

# Makes the bundled Test::Nginx::Socket fallback loadable WITHOUT shadowing a
# real, installed openresty/test-nginx.
#
#   HARNESS_PERL_SWITCHES='-It/compat -MIngressLbFallback' prove -r t/
#   PERL5OPT='-It/compat -MIngressLbFallback' prove -r t/
#   PERL5LIB=t/compat prove -MIngressLbFallback -r t/
#
# (Plain "prove -It/compat -MIngressLbFallback" does not work: prove's -I is
# only for the tests, while its -M loads the module into prove itself.)
#
# The fallback directory is appended to the END of @INC, so perl only reaches
# it when no other @INC entry provides Test/Nginx/Socket.pm.

use strict;
use warnings;

use File::Basename ();
use File::Spec ();

# Absolute path, so it keeps working if a test chdir()s.
our $Dir = File::Spec->catdir(
    File::Basename::dirname(File::Spec->rel2abs(__FILE__)), 'fallback');

push @INC, $Dir unless grep { !ref($_) && $_ eq $Dir } @INC;

# Called by App::Prove when prove itself loads us ("prove -MIngressLbFallback"
# with t/compat in PERL5LIB): pass ourselves on to the test processes.
sub load {
    my $switches = '-I' . File::Basename::dirname($Dir) . ' -MIngressLbFallback';
    my $current = $ENV{HARNESS_PERL_SWITCHES} // '';
    $ENV{HARNESS_PERL_SWITCHES} = length $current ? "$current $switches" : $switches
        unless $current =~ /-MIngressLbFallback\b/;
}

1;
