#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (Swift -sanitize=fuzzer). See docs/reliability.md, "Fuzzing".
#
#   scripts/fuzz.sh [--merge] [--seeds] [TARGET|all] [SECONDS]
#
#   TARGET    wire | frame | handshake | device | config | all (default all)
#   SECONDS   run time per target (default 30)
#   --merge   afterwards, merge the inputs that add coverage into the repo corpus (fuzz/corpus/TARGET)
#   --seeds   regenerate the seed corpus from the real encoders (fuzz-seeds), then exit
#             (fuzz/corpus/config is hand-written: the example configs, environment and flags)
#
# The harnesses live in the separate package fuzz/ (it depends on this package by path), built
# in release with the fuzzer flags into .build-fuzz/ (only the products needed). Each run works on
# a copy of fuzz/corpus/TARGET in fuzz-artifacts/TARGET/ (git-ignored), so the repo corpus only
# changes with --merge. Exits non-zero when a target crashes, hangs (-timeout=5 s per input) or
# exceeds the memory limit, and prints the saved input and the command that replays it.
#
#   SWARM_FUZZ_RSS_MB     libFuzzer -rss_limit_mb (default 2048; also the per-allocation limit)
#   SWARM_FUZZ_BUILD_TIMEOUT  seconds allowed for the build (default 2400)
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(wire frame handshake device config)
merge=0
seeds=0
positional=()
for arg in "$@"; do
    case "$arg" in
        --merge) merge=1 ;;
        --seeds) seeds=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "fuzz: unknown option $arg" >&2; exit 2 ;;
        *) positional+=("$arg") ;;
    esac
done
target=${positional[0]:-all}
seconds=${positional[1]:-30}
rss_mb=${SWARM_FUZZ_RSS_MB:-2048}
build_timeout=${SWARM_FUZZ_BUILD_TIMEOUT:-2400}

if [[ "$target" == all ]]; then
    targets=("${all_targets[@]}")
else
    case " ${all_targets[*]} " in
        *" $target "*) targets=("$target") ;;
        *) echo "fuzz: unknown target '$target' (${all_targets[*]} or all)" >&2; exit 2 ;;
    esac
fi
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz: SECONDS must be a number, got '$seconds'" >&2; exit 2; }

# Largest input per target: room for every message shape, without wasting time on huge inputs.
max_len() {
    case "$1" in
        wire) echo 4096 ;;
        frame) echo 4096 ;;
        handshake) echo 2560 ;;  # a hello with a 1024-byte name, a proof, a little more
        device) echo 8192 ;;
        config) echo 8192 ;;
    esac
}

scratch=.build-fuzz
bin="$scratch/release"
build() {
    # -sanitize=fuzzer: coverage instrumentation (every Swift module) and libFuzzer linked in;
    # -enable-testing: the @testable imports of internal parsers (Handshake,
    # DeviceGateway.validatePayload, DeviceState); SWARM_LIBFUZZER: each harness's main calls
    # LLVMFuzzerRunDriver instead of replaying files (fuzz/Sources/FuzzSupport says why);
    # -use-ld=lld: gold fails on these links ("internal error in format_file_lineno").
    local product=$1
    echo "== fuzz: build $product"
    timeout "$build_timeout" swift build -c release --package-path fuzz --scratch-path "$scratch" --product "$product" \
        -Xswiftc -sanitize=fuzzer -Xswiftc -enable-testing -Xswiftc -DSWARM_LIBFUZZER -Xswiftc -use-ld=lld \
        2>&1 | grep -v -E '^\[[0-9]+/[0-9]+\] (Compiling|Write|Emitting|Planning)' || true
    [[ ${PIPESTATUS[0]} -eq 0 && -x "$bin/$product" ]] || { echo "fuzz: build of $product failed" >&2; exit 1; }
}

if [[ $seeds -eq 1 ]]; then
    build fuzz-seeds
    "$bin/fuzz-seeds" fuzz/corpus
    exit 0
fi

for t in "${targets[@]}"; do build "fuzz-$t"; done

failed=()
summary=()
for t in "${targets[@]}"; do
    work="fuzz-artifacts/$t"
    rm -rf "$work"
    mkdir -p "$work/corpus"
    cp -R "fuzz/corpus/$t/." "$work/corpus/"
    dict=()
    [[ -f "fuzz/dict/$t.dict" ]] && dict=("-dict=fuzz/dict/$t.dict")
    echo "== fuzz: $t for ${seconds}s (corpus $(ls "$work/corpus" | wc -l) files, log $work/fuzz.log)"
    set +e
    # The outer timeout is a safety net only: libFuzzer stops itself at -max_total_time.
    # SWIFT_BACKTRACE=enable=no: the Swift runtime's crash handler (SA_SIGINFO) would make
    # libFuzzer leave SIGILL/SIGTRAP alone, and a trap would then save no crash input.
    SWARM_FUZZ_SCRATCH="$PWD/$work" SWIFT_BACKTRACE=enable=no timeout --kill-after=10 $((seconds + 120)) "$bin/fuzz-$t" "$work/corpus" \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=5 \
        -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb" \
        -artifact_prefix="$work/" -print_final_stats=1 -reload=0 "${dict[@]}" \
        >"$work/fuzz.log" 2>&1
    rc=$?
    set -e
    last=$(grep -E '#[0-9]+.*cov: ' "$work/fuzz.log" | tail -1 | sed -E 's/^#([0-9]+)[[:space:]]+[A-Z]+[[:space:]]+/#\1 /' || true)
    execs=$(grep -E '^stat::number_of_executed_units' "$work/fuzz.log" | awk '{print $2}' || true)
    rate=$(grep -E '^stat::average_exec_per_sec' "$work/fuzz.log" | awk '{print $2}' || true)
    rss=$(grep -E '^stat::peak_rss_mb' "$work/fuzz.log" | awk '{print $2}' || true)
    line="$t: ${execs:-?} runs, ${rate:-?} exec/s, peak ${rss:-?} MB | ${last:-no stats}"
    if [[ $rc -ne 0 ]]; then
        artifacts=$(ls -1 "$work" | grep -E '^(crash|timeout|oom|leak|slow-unit)-' || true)
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $rc); log: $work/fuzz.log" >&2
        grep -E 'ERROR: libFuzzer|Fatal error|fuzz invariant|SUMMARY' "$work/fuzz.log" | head -5 >&2 || true
        for a in $artifacts; do
            echo "fuzz: input saved at $work/$a" >&2
            echo "fuzz: replay (with a Swift backtrace) with: $bin/fuzz-$t $work/$a" >&2
        done
        [[ -z "$artifacts" ]] && { echo "fuzz: no artifact saved; tail of the log:" >&2; tail -20 "$work/fuzz.log" >&2; }
        line="$line | FAILED"
    elif [[ $merge -eq 1 ]]; then
        before=$(ls "fuzz/corpus/$t" | wc -l)
        SWARM_FUZZ_SCRATCH="$PWD/$work" SWIFT_BACKTRACE=enable=no timeout 600 "$bin/fuzz-$t" -merge=1 -max_len="$(max_len "$t")" -timeout=5 -rss_limit_mb="$rss_mb" \
            "fuzz/corpus/$t" "$work/corpus" >"$work/merge.log" 2>&1
        echo "fuzz: $t merged into fuzz/corpus/$t: $before -> $(ls "fuzz/corpus/$t" | wc -l) files"
    fi
    summary+=("$line")
done

echo "== fuzz summary"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crash, hang or memory blow-up in ${targets[*]}"
