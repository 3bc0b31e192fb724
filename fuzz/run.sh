#!/usr/bin/env bash
# Runs the cargo-fuzz targets for SECONDS each, after seeding each target's corpus from the
# samples in events/ (fuzz/corpus is generated here and not committed). Crashes land in
# fuzz/artifacts/<target>/, logs in fuzz/logs/<target>.log.
#
#   fuzz/run.sh [--ci] SECONDS [TARGET...]
#
# --ci: without a nightly toolchain, print "FUZZ SKIPPED" and succeed (the stable property test
# in `make test` still checks the same properties). Either way cargo-fuzz is installed if missing.
# FUZZ_FLAGS: extra `cargo fuzz run` flags (e.g. `-s none`; a different sanitizer rebuilds all).
set -uo pipefail

ci=0
if [[ ${1:-} == --ci ]]; then
    ci=1
    shift
fi
seconds=${1:-60}
shift || true
all=(trybe tribe tribemade trifft tilby standard basic_auth path_token form_decode envelope)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

cd "$(dirname "$0")" || exit 1 # fuzz/

if ! cargo +nightly --version >/dev/null 2>&1; then
    if ((ci)); then
        echo "################################################################################"
        echo "## FUZZ SKIPPED: no nightly toolchain (rustup toolchain install nightly)"
        echo "## The same properties still ran on stable: shared/tests/properties (make test)."
        echo "################################################################################"
        exit 0
    fi
    echo "make fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 1
fi

# ---- corpora: the samples, as each target reads its input --------------------------------------
events=../events
samples_of() { find "$events/$1" -maxdepth 1 -type f ! -name '*.apigw.json' | sort; }
# seed TARGET NAME PREFIX [FILE]: PREFIX (printf format) followed by FILE's bytes.
seed() {
    local out="corpus/$1/$2"
    [[ -e $out ]] && return
    { printf "$3"; [[ -n ${4:-} ]] && cat "$4"; } >"$out"
}
# seed_text TARGET NAME TEXT: TEXT verbatim.
seed_text() {
    [[ -e corpus/$1/$2 ]] || printf '%s' "$3" >"corpus/$1/$2"
}
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    case $target in
    trybe | tribe | tribemade | trifft | tilby | standard)
        # Case::decode: [flags][skew][sections] body. flags bit 0 signs, bit 1 tight limits,
        # bits 2-3 the credential variant.
        for f in $(samples_of "$target"); do
            n=$(basename "$f")
            seed "$target" "signed-$n" '\x01\x00\x00' "$f"
            seed "$target" "unsigned-$n" '\x00\x00\x00' "$f"
            seed "$target" "variant1-$n" '\x05\x00\x00' "$f"
            seed "$target" "variant2-$n" '\x09\x00\x00' "$f"
            seed "$target" "tight-$n" '\x03\x00\x00' "$f"
            seed "$target" "late-$n" '\x01\x71\x00' "$f"
        done
        for other in "${all[@]:0:6}"; do
            [[ $other == "$target" ]] && continue
            for f in $(samples_of "$other"); do
                seed "$target" "signed-$other-$(basename "$f")" '\x01\x00\x00' "$f"
            done
        done
        ;;
    envelope)
        # EnvelopeCase::decode: [kind] 6 fields, 3 optional fields, payload.
        for p in "${all[@]:0:6}"; do
            for f in $(samples_of "$p"); do
                n=$(basename "$f")
                seed envelope "json-$p-$n" '\x00\x05trybe\x02e1\x04t.yp\x0ctrybe##id#e1\x00\x00\x00\x01x\xff' "$f"
                seed envelope "text-$p-$n" '\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff' "$f"
                seed envelope "bytes-$p-$n" '\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00' "$f"
            done
        done
        seed envelope awkward '\x03\x02\xef\xbf\x01\xfe\x00\x00\x00\x00\x00\x00\x00ab\xfe\xffc'
        ;;
    form_decode)
        for f in $(samples_of trifft); do seed form_decode "$(basename "$f")" '' "$f"; done
        seed_text form_decode repeated 'a=1&b=2&a=3&a=&&=x&c'
        seed_text form_decode escapes 'n=%41%zz%4+y%C3%A9%ff&%3D=%26'
        ;;
    basic_auth)
        # BasicCase::decode: [n] ([tenant][user][password])* [mode] rest.
        seed basic_auth canonical '\x01\x00\x05alice\x03pw1\x01'
        seed basic_auth tenants '\x02\x01a\x04user\x02p1\x01b\x04user\x02p2\x02'
        seed basic_auth raw '\x01\x00\x01u\x01p\x00Basic dTpw'
        seed basic_auth colon '\x01\x00\x03a:b\x01c\x01'
        ;;
    path_token)
        # PathCase::decode: [flags][n] ([len][token])* path; \x01 k stands for token k.
        seed path_token list '\x00\x02\x18tribemade-dev-token-0001\x05tok-2/prod/\x01\x00/x'
        seed path_token map '\x01\x03\x02t1\x02t2\x02t1//\x01\x02/\x01\x01'
        seed path_token none '\x00\x01\x03abc/ab/abcd//'
        ;;
    *)
        echo "unknown fuzz target $target" >&2
        exit 1
        ;;
    esac
done

# ---- runs ---------------------------------------------------------------------------------------
mkdir -p logs
cargo +nightly fuzz build ${FUZZ_FLAGS:-} || exit 1
failed=()
summary=()
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    cargo +nightly fuzz run ${FUZZ_FLAGS:-} "$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 -dict="$PWD/dict/webhook.dict" \
        >"logs/$target.log" 2>&1
    status=$?
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "logs/$target.log" | tail -1 | awk '{print $2}')
    if ((status)); then
        failed+=("$target")
        grep -E 'panicked|SUMMARY|Test unit written|ERROR' "logs/$target.log" | head -5
        summary+=("$(printf '%-12s %12s runs  CRASHED (fuzz/logs/%s.log, fuzz/artifacts/%s/)' "$target" "${runs:-?}" "$target" "$target")")
    else
        summary+=("$(printf '%-12s %12s runs  ok' "$target" "${runs:-?}")")
    fi
done
echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
