#!/usr/bin/env bash
# Coverage-guided fuzzing of the codec (codec/fuzz) and of the server's
# connection state machines (server/fuzz), one target after another.
#
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGET defaults to every target of both
# fuzz crates. Exits non-zero when any target finds a crash, leak, timeout
# or out-of-memory; the input is left in <crate>/fuzz/artifacts/<target>/.
# `make test` runs every target briefly (FUZZ_TEST_SECONDS, sanitizer
# none); `make fuzz` runs them longer.
#
# Environment:
#   FUZZ_SANITIZER  sanitizer for `cargo fuzz` (default: address; `none`
#                   runs about 3x more executions per second and still
#                   catches every panic, which is all the codec, having no
#                   `unsafe`, can do wrong)
#   FUZZ_RSS_MB     libFuzzer -rss_limit_mb (default: 2048)
#
# Only the stable toolchain is installed. cargo-fuzz passes nightly-only
# flags (-Zsanitizer, -Cpasses=sancov-module, ...), so RUSTC_BOOTSTRAP=1 lets
# the stable compiler accept them. That is confined to this script and the
# fuzz crate, which has its own [workspace] and never shares a target
# directory with the main build.
#
# One fuzzer at a time, one process each (-jobs=1 -workers=1): the machine
# is small and shared. With -jobs libFuzzer runs the fuzzing in a child
# process whose output goes to fuzz-0.log; this script keeps everything a
# run printed in codec/fuzz/logs/<target>.log and prints a summary line per
# target (and the log's tail when a target fails).
set -euo pipefail

seconds="${1:-60}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sanitizer="${FUZZ_SANITIZER:-address}"
rss_mb="${FUZZ_RSS_MB:-2048}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

failed=()
summary=()
for fuzz_dir in "$root/codec/fuzz" "$root/server/fuzz"; do
    cd "$fuzz_dir"
    crate="${fuzz_dir#"$root"/}"

    mapfile -t available < <(cargo fuzz list)
    targets=()
    if [ "$#" -gt 0 ]; then
        for t in "$@"; do
            if printf '%s\n' "${available[@]}" | grep -qx "$t"; then
                targets+=("$t")
            fi
        done
    else
        targets=("${available[@]}")
    fi
    [ "${#targets[@]}" -eq 0 ] && continue

    # Seed corpora: generated, never committed (corpus/ is gitignored). Inputs
    # that once failed, or hand-made sessions, are kept in seeds/<target>/ and
    # replayed every run.
    if [ -f examples/gen_seeds.rs ]; then
        cargo run --quiet --example gen_seeds -- corpus
    fi

    cargo fuzz build --sanitizer "$sanitizer"

    mkdir -p logs
    for target in "${targets[@]}"; do
        mkdir -p "corpus/$target"
        corpora=("corpus/$target")
        if [ -d "seeds/$target" ]; then
            corpora+=("seeds/$target")
        fi
        echo "== $target: ${seconds}s (sanitizer: $sanitizer)"
        rm -f fuzz-0.log
        start=$(date +%s)
        status=0
        log="logs/$target.log"
        cargo fuzz run --sanitizer "$sanitizer" "$target" "${corpora[@]}" -- \
            -max_total_time="$seconds" -rss_limit_mb="$rss_mb" \
            -jobs=1 -workers=1 -print_final_stats=1 >"$log" 2>&1 || status=$?
        elapsed=$(($(date +%s) - start))
        if [ -f fuzz-0.log ]; then
            { echo "---- fuzz-0.log (the fuzzing process)"; cat fuzz-0.log; } >>"$log"
            rm -f fuzz-0.log
        fi
        done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
        last_line="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
        runs="$(grep -E '^stat::number_of_executed_units:' "$log" | tail -n 1 | awk '{print $2}' || true)"
        eps="$(grep -E '^stat::average_exec_per_sec:' "$log" | tail -n 1 | awk '{print $2}' || true)"
        line="${done_line:-$last_line}"
        cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$line")"
        ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$line")"
        if [ "$status" -eq 0 ]; then
            result=ok
        else
            result="FAILED (exit $status)"
            failed+=("$target")
            echo "---- $target: what failed (full output in $crate/$log)" >&2
            grep -m 1 -A 2 'panicked at' "$log" >&2 || true
            grep -E '^(SUMMARY|==[0-9]+==ERROR|artifact_prefix|Base64)' "$log" >&2 || true
            ls -1 "artifacts/$target" 2>/dev/null | sed 's/^/artifact: /' >&2 || true
        fi
        summary+=("$(printf '%-14s %-18s runs=%-10s exec/s=%-8s cov=%-6s ft=%-6s %ss' \
            "$target" "$result" "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "$elapsed")")
    done

done

echo
echo "== fuzz summary (${seconds}s per target, logs in codec/fuzz/logs/ and server/fuzz/logs/)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in codec/fuzz/artifacts/ or server/fuzz/artifacts/)" >&2
    exit 1
fi
