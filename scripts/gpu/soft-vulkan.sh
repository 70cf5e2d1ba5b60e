#!/usr/bin/env bash
# scripts/gpu/checks.sh on a software Vulkan driver, so the `vulkan` build is checked on a machine
# without a GPU: Mesa's lavapipe (default) or SwiftShader (the copy in Debian's chromium-common).
#
#   scripts/gpu/soft-vulkan.sh [lavapipe|swiftshader] [OUT]
#
# Neither driver has VK_KHR_workgroup_memory_explicit_layout, and without it cubecl-spirv 0.11.3
# lowers shared memory wrongly: in `lower_shared_implicit` (src/ops/memory.rs) the Workgroup
# variable is declared with the slice's pointer type and the address taken with the pointed-to
# type, the two swapped. spirv-val rejects the module ("variables can only allocate a workgroup
# pointer if the VariablePointers capability is declared"); lavapipe crashes compiling it and
# SwiftShader computes garbage (parity_llm relative error 1.0). GPUs whose drivers have the
# extension (NVIDIA, RADV, ANV) take cubecl's other path and never run that code. This script
# builds against a copy of crates.io's cubecl-spirv with the two types swapped back (made here,
# from the registry's source, never committed), then runs the checks that fit a CPU: the parity
# tests, the shipped model's understanding and generation (compared with the CPU build), the tiny
# LoRA recipe and `bench --shape tiny`.
#
# Builds into $CARGO_TARGET_DIR (default target/soft-vulkan; ~25 min cold on 2 cores) and the kit
# into .devkit-soft; OUT (default out/soft-vulkan-DRIVER) gets checks.sh's log.txt, results.jsonl
# and artifacts.tar.
set -euo pipefail
cd "$(dirname "$0")/../.."
DRIVER=${1:-lavapipe}
OUT=${2:-out/soft-vulkan-$DRIVER}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/soft-vulkan}
WORK=$CARGO_TARGET_DIR/soft-vulkan
mkdir -p "$WORK"

case $DRIVER in
lavapipe)
    icd=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
    if [[ ! -e $icd ]]; then
        apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null
    fi
    export VK_ICD_FILENAMES=$icd
    ;;
swiftshader)
    lib=$WORK/chromium-common/usr/lib/chromium
    if [[ ! -e $lib/vk_swiftshader_icd.json ]]; then
        (cd "$WORK" && apt-get download chromium-common >/dev/null &&
            dpkg -x chromium-common_*.deb chromium-common && rm chromium-common_*.deb)
    fi
    # chromium-common's own Vulkan loader, so the system needs none.
    export VK_ICD_FILENAMES=$lib/vk_swiftshader_icd.json LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    ;;
*)
    echo "driver: lavapipe or swiftshader" >&2
    exit 2
    ;;
esac

# The copy of cubecl-spirv with the fix, from the version Cargo.lock pins.
version=$(grep -A1 '^name = "cubecl-spirv"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
cargo fetch -q
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cubecl-spirv-"$version" | head -n 1)
fixed=$WORK/cubecl-spirv-$version
rm -rf "$fixed.new" && cp -r "$src" "$fixed.new" && chmod -R u+w "$fixed.new"
python3 - "$fixed.new/src/ops/memory.rs" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
# Inside lower_shared_implicit: the variable takes `value_ty` (the pointer) and the address `ty`.
pattern = (r"(GlobalVariableOp::new\(ctx, )value_ty(, StorageClass::Workgroup, name\.clone\(\), None\);"
           r"(?:.|\n){0,300}?AddressOfOp::new\(ctx, )ty(, name\);)")
text, n = re.subn(pattern, r"\1ty\2value_ty\3", text)
if n != 1:
    sys.exit(f"{path}: the code to fix was not found ({n} matches); this cubecl-spirv differs")
open(path, "w").write(text)
PY
# A copy as before keeps its timestamps, so cargo does not rebuild cubecl and burn.
if diff -rq "$fixed" "$fixed.new" >/dev/null 2>&1; then
    rm -rf "$fixed.new"
else
    rm -rf "$fixed" && mv "$fixed.new" "$fixed"
fi

CUBECL_SPIRV=$fixed scripts/gpu/pack.sh .devkit-soft
BENCH_ARGS="--shape tiny" scripts/gpu/checks.sh .devkit-soft "$OUT" parity pipelines train bench
grep -E '^== .*(rc [0-9]+|identical|differs)' "$OUT/log.txt"
