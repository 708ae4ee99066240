#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ for a bounded time each (README "Fuzzing").
#
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS (default 60) each
#   scripts/fuzz.sh pick sni_lookup      only these
#   FUZZ_SECONDS=600 scripts/fuzz.sh backends_json
#
# Each target starts from its checked-in seeds (fuzz/seeds/<target>/, read only) and
# the corpus of earlier runs, kept in target/fuzz-work/<target>/corpus; crashes go to
# target/fuzz-work/<target>/artifacts/. The checked-in seeds are never written to.
# Needs a nightly toolchain (sanitizers); installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-2048}
ALL_TARGETS=(backends_json servers_json pick sni_lookup)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

die() { echo "fuzz.sh: $*" >&2; exit 1; }

for t in "${TARGETS[@]}"; do
    [ -f "fuzz/fuzz_targets/$t.rs" ] || die "unknown target '$t' (targets: ${ALL_TARGETS[*]})"
done
[[ $FUZZ_SECONDS =~ ^[0-9]+$ ]] && [ "$FUZZ_SECONDS" -gt 0 ] || die "FUZZ_SECONDS must be a positive number of seconds"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    die "no nightly Rust toolchain (cargo-fuzz needs one for the sanitizers). Install it with:
    rustup toolchain install nightly --profile minimal"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

WORK=$ROOT/target/fuzz-work
start=$(date +%s)
cd fuzz
echo "== building ${TARGETS[*]}"
for t in "${TARGETS[@]}"; do
    cargo +nightly fuzz build "$t"
done
built=$(date +%s)

failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$t/corpus" "$WORK/$t/artifacts"
    extra=()
    case $t in
        backends_json) extra=(-dict=backends.dict) ;;
        # Keep documents small: every certificate in one is parsed (OpenSSL, slow).
        servers_json) extra=(-dict=servers.dict -max_len=4096) ;;
        pick) extra=(-max_len=1024) ;;
        sni_lookup) extra=(-max_len=300) ;;
    esac
    echo "== $t: ${FUZZ_SECONDS}s (corpus $WORK/$t/corpus, seeds fuzz/seeds/$t)"
    # The first corpus directory receives new inputs; the seeds are only read.
    if ! cargo +nightly fuzz run "$t" "$WORK/$t/corpus" "seeds/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb="$RSS_LIMIT_MB" \
        -artifact_prefix="$WORK/$t/artifacts/" -print_final_stats=1 "${extra[@]}"; then
        failed+=("$t")
    fi
done

end=$(date +%s)
echo "== fuzz.sh: build $((built - start))s, total $((end - start))s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]} — inputs in $WORK/<target>/artifacts/;" >&2
    echo "  reproduce: (cd fuzz && cargo +nightly fuzz run <target> <artifact>)" >&2
    echo "  minimise:  (cd fuzz && cargo +nightly fuzz tmin <target> <artifact>)" >&2
    echo "  then add it under tests/data/fuzz/<target>/ (see tests/fuzz_regressions.rs)" >&2
    exit 1
fi
echo "fuzz.sh: no failure in ${TARGETS[*]}"
