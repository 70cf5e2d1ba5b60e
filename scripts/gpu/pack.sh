#!/usr/bin/env bash
# Builds what scripts/gpu/checks.sh runs on a GPU machine and packs it into KIT (default .devkit,
# git-ignored): the Vulkan builds, stripped, in two xz archives that each fit one device call's
# 64 MiB with the working tree (each binary is 70-90 MB, 7-8 MB packed): infer.tar.xz (bench,
# understand, generate; janus-core's parity tests) and train.tar.xz (janus-train,
# janus-shapes, parity_train); and the CPU build's images for the `generate` command that
# checks.sh compares against.
#
#   CARGO_TARGET_DIR=/work/vk-target scripts/gpu/pack.sh [KIT]
#
# CUBECL_SPIRV=DIR builds against the cubecl-spirv source in DIR instead of crates.io's (a
# `[patch]` given on cargo's command line; Cargo.lock is put back afterwards): scripts/gpu/soft-vulkan.sh
# uses it for the copy with the shared-memory fix that software Vulkan drivers need.
set -euo pipefail
KIT=${1:-.devkit}
TARGET=${CARGO_TARGET_DIR:-target}
export CARGO_TARGET_DIR=$TARGET
patch_args=()
if [[ -n ${CUBECL_SPIRV:-} ]]; then
    patch_args=(--config "patch.crates-io.cubecl-spirv.path=\"$CUBECL_SPIRV\"")
    cp Cargo.lock "$TARGET/Cargo.lock.pack-backup"
    trap 'cp "$TARGET/Cargo.lock.pack-backup" Cargo.lock' EXIT
fi
rm -rf "$KIT" && mkdir -p "$KIT/infer" "$KIT/train"

# One cargo invocation, so burn and cubecl are built once with one feature set for every binary
# (the programs with both flex and vulkan pick vulkan; janus-cli/src/device.rs).
bins=$(cargo build "${patch_args[@]}" --release -p janus-rs -p janus-core -p janus-train -p janus-cli \
    -p janus-shapes -p janus-perf --features janus-cli/vulkan,janus-testutil/vulkan \
    --bin bench --example generate --example understand --bin janus-train --bin janus-shapes \
    --test parity --test parity_generation --test parity_train --message-format=json-render-diagnostics |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])')
while read -r name exe; do
    case $name in
    janus-train | janus-shapes | parity_train) cp "$exe" "$KIT/train/$name" ;;
    *) cp "$exe" "$KIT/infer/$name" ;;
    esac
done <<<"$bins"
[[ $(ls "$KIT/infer" "$KIT/train" | grep -vc ':$\|^$') == 8 ]] || { echo "expected 8 binaries"; exit 1; }
for kit in infer train; do
    strip "$KIT/$kit"/*
    pwd >"$KIT/$kit/SOURCE_DIR"
    # One solid stream with a window larger than a binary: the binaries share most of their code.
    (tar -C "$KIT/$kit" -cf - . | xz -9 --lzma2=dict=512MiB -T1 >"$KIT/$kit.tar.xz" && rm -rf "${KIT:?}/$kit") &
done
wait

# The CPU build's images of checks.sh's generate command.
env -u CARGO_TARGET_DIR cargo run --release --example generate -- --model models/shapes-janus --prompt "a blue triangle" \
    --parallel 2 --cfg 3 --seed 7 --out "$KIT/cpu-generated"
ls -la "$KIT" "$KIT/cpu-generated"
