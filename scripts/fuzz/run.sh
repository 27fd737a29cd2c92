#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer from the Swift toolchain, with AddressSanitizer) of every
# parser: pickle, zip, safetensors, npy, png, targz, mask, split.
#   scripts/fuzz/run.sh TARGET SECONDS   fuzz one target for a bounded time
#   scripts/fuzz/run.sh all SECONDS      each target in turn, SECONDS each
#   scripts/fuzz/run.sh build            only build .build/fuzz/backdoor-fuzz
#   scripts/fuzz/run.sh keep TARGET      merge the grown corpus, minimised, into Tests/Fuzz/corpus/TARGET
# The corpus grows in .build/fuzz/corpus/TARGET (seeded from Tests/Fuzz/corpus/TARGET); a crash
# input is copied to Tests/Fuzz/crashes/TARGET/, which FuzzTests replays under `swift test`, and
# the run fails. A summary line per target (executions, coverage) goes to standard output.
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=(pickle zip safetensors npy png targz mask split)
out=.build/fuzz
binary=$out/backdoor-fuzz

usage() { echo "usage: $0 TARGET|all SECONDS  (TARGET: ${targets[*]}) | $0 build" >&2; exit 2; }

build() {
    mkdir -p "$out"
    # Rebuild only when a source changed.
    local sources=(Sources/Support/*.swift Sources/Formats/*.swift Sources/Datasets/*.swift
                   Sources/Defenses/MaskFile.swift scripts/fuzz/*.swift)
    if [ -x "$binary" ] && [ -z "$(find "${sources[@]}" -newer "$binary" | head -1)" ]; then return; fi
    echo "fuzz: building $binary" >&2
    # libFuzzer and AddressSanitizer come with the Swift toolchain (no Debian package needed).
    local runtime
    runtime=$(dirname "$(dirname "$(command -v swiftc)")")/lib/clang
    if ! ls "$runtime"/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
        echo "fuzz: this Swift toolchain has no libFuzzer runtime (looked in $runtime/*/lib/linux)" >&2; exit 1
    fi
    local flags=(-sanitize=fuzzer,address -parse-as-library -O -g -I "$out" -I Sources/CPNG -I Sources/CZLibSystem)
    # The toolchain's lld links the sanitizer runtimes without gold's screens of warnings.
    if command -v ld.lld >/dev/null; then flags+=(-use-ld=lld); fi
    module() { # NAME FILES...
        local name=$1; shift
        swiftc "${flags[@]}" -module-name "$name" -emit-module -emit-module-path "$out/$name.swiftmodule" \
            -emit-library -static -o "$out/lib$name.a" "$@"
    }
    module Support Sources/Support/*.swift
    module Formats Sources/Formats/*.swift
    # SwiftPM generates Datasets' `Bundle.module` (its shipped reference data); outside SwiftPM the
    # fuzzer points it at the source folder, which holds the same ReferenceData/.
    printf 'import Foundation\nextension Foundation.Bundle {\n    static let module = Bundle(path: "%s")!\n}\n' \
        "$PWD/Sources/Datasets" >"$out/DatasetsBundle.swift"
    module Datasets Sources/Datasets/*.swift "$out/DatasetsBundle.swift"
    module MaskFileFuzz Sources/Defenses/MaskFile.swift scripts/fuzz/NeuronValues.swift
    swiftc "${flags[@]}" -o "$binary" scripts/fuzz/FuzzMain.swift -L "$out" \
        -lDatasets -lFormats -lMaskFileFuzz -lSupport -lpng -lz
}

fuzz() { # TARGET SECONDS
    local target=$1 seconds=$2 corpus=$out/corpus/$1 crashes=Tests/Fuzz/crashes/$1 log=$out/$1.log
    rm -rf "$out/artifacts/$target"  # only this run's findings are copied below
    mkdir -p "$corpus" "$crashes" "$out/artifacts/$target"
    [ -d "Tests/Fuzz/corpus/$target" ] && cp -n Tests/Fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
    local status=0
    # Tar inputs are written to a file per execution; the other targets parse in memory.
    BACKDOOR_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
        "$binary" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/$target/" "$corpus" >"$log" 2>&1 || status=$?
    local execs cov
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || echo "cov: ?")
    echo "fuzz $target: ${seconds}s, $execs executions, $cov, corpus $(ls "$corpus" | wc -l) inputs"
    if [ "$status" -ne 0 ]; then
        for crash in "$out/artifacts/$target"/*; do
            [ -f "$crash" ] && cp "$crash" "$crashes/" && echo "fuzz $target: crash input saved as $crashes/$(basename "$crash")"
        done
        grep -m1 -A12 -E 'ERROR: (AddressSanitizer|libFuzzer)|Fatal error|==ERROR' "$log" >&2 || tail -20 "$log" >&2
        return 1
    fi
}

keep() { # TARGET: libFuzzer's merge keeps the smallest inputs that reach all the coverage.
    local target=$1 kept=Tests/Fuzz/corpus/$1
    mkdir -p "$kept"
    BACKDOOR_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=0 "$binary" -merge=1 -max_len=65536 "$kept" "$out/corpus/$target" \
        >"$out/$target.merge.log" 2>&1
    echo "fuzz $target: Tests/Fuzz/corpus/$target now $(ls "$kept" | wc -l) inputs, $(du -sh "$kept" | cut -f1)"
}

case "${1:-}" in
    build) build ;;
    keep) [ $# -eq 2 ] && [[ " ${targets[*]} " == *" $2 "* ]] || usage; build; keep "$2" ;;
    all) [ $# -eq 2 ] || usage; build; failed=0
         for t in "${targets[@]}"; do fuzz "$t" "$2" || failed=1; done; exit $failed ;;
    "") usage ;;
    *) [ $# -eq 2 ] && [[ " ${targets[*]} " == *" $1 "* ]] || usage; build; fuzz "$1" "$2" ;;
esac
