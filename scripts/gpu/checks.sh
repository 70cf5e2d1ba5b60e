#!/usr/bin/env bash
# The GPU checks of janus-rs on a machine with a Vulkan GPU (and, for the HF column, PyTorch with
# CUDA and transformers), from binaries built elsewhere by scripts/gpu/pack.sh.
#
#   scripts/gpu/checks.sh KIT OUT [STEP...]
#
# KIT holds infer.tar.xz and/or train.tar.xz (from pack.sh); OUT receives three files: log.txt
# (every step's output), results.jsonl (the bench JSON lines) and artifacts.tar (images, training
# metrics). Run from the repository root. STEPs (default: all, in this order): parity (the test
# binaries the kit holds; test:NAME runs one), pipelines, train, bench, hf, bench7b, shapes. Each
# step has its own time limit, so one that hangs costs only its share. BENCH_ARGS adds options to
# the bench step's `bench` (scripts/gpu/soft-vulkan.sh passes "--shape tiny").
set -u
KIT=${1:?kit folder}
OUT=${2:?output folder}
shift 2
STEPS=${*:-parity pipelines train bench hf bench7b shapes}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
RESULTS="$OUT/results.jsonl"
ART=$(mktemp -d)
BIN=$(mktemp -d)

say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
# run NAME SECONDS CMD...: output to the log; the last line of a bench (its JSON) to results.
run() {
    local name=$1 limit=$2
    shift 2
    say "$name (limit ${limit}s): $*"
    local t0 rc
    t0=$(date +%s%N)
    timeout -k 5 "$limit" "$@" >"$ART/$name.out" 2>&1
    rc=$?
    cat "$ART/$name.out" >>"$LOG"
    say "$name: rc $rc after $(((($(date +%s%N) - t0) / 1000000))) ms"
    return $rc
}
json() { # json NAME: the step's last line, if it is a JSON object, tagged with the step
    local last
    last=$(tail -n 1 "$ART/$1.out")
    [[ $last == \{* ]] && echo "{\"step\":\"$1\",${last#\{}" >>"$RESULTS"
}

say "host $(hostname), $(nproc) cores; repo at $PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader >>"$LOG" 2>&1
python3 - "$BIN" "$KIT"/*.tar.xz <<'EOF' || { say "cannot unpack the kit"; exit 1; }
import sys, tarfile
for archive in sys.argv[2:]:
    tarfile.open(archive).extractall(sys.argv[1])
EOF
chmod +x "$BIN"/*
ls -la "$BIN" >>"$LOG"
# The test binaries find the fixtures through their compile-time CARGO_MANIFEST_DIR.
SRC=$(cat "$BIN/SOURCE_DIR")
if [[ $SRC != "$PWD" && ! -e $SRC ]]; then
    mkdir -p "$(dirname "$SRC")" && ln -s "$PWD" "$SRC"
fi
export JANUS_FIXTURES=$PWD/tests/fixtures JANUS_TEST_DEVICE=${JANUS_TEST_DEVICE:-vulkan}

for step in $STEPS; do
    case $step in
    parity)
        for t in parity parity_generation parity_train; do
            [[ -e $BIN/$t ]] && run "test-$t" 150 "$BIN/$t" --test-threads 1 --nocapture
        done
        ;;
    test:*) run "test-${step#test:}" 150 "$BIN/${step#test:}" --test-threads 1 --nocapture ;;
    pipelines)
        run understand 60 "$BIN/understand" --model models/shapes-janus \
            --image docs/red-circle.png --question "What is in the image?"
        run generate 60 "$BIN/generate" --model models/shapes-janus --prompt "a blue triangle" \
            --parallel 2 --cfg 3 --seed 7 --out "$ART/generated"
        # The same command's images from the CPU build, made by pack.sh.
        for f in "$KIT"/cpu-generated/*; do
            if cmp -s "$f" "$ART/generated/$(basename "$f")"; then
                say "generate: $(basename "$f") identical to the CPU build's"
            else
                say "generate: $(basename "$f") differs from the CPU build's"
            fi
        done
        ;;
    train)
        rm -rf runs/tiny-lora
        run train-lora 120 "$BIN/janus-train" --config examples/train/tiny/lora.toml
        cp runs/tiny-lora/metrics.jsonl "$ART/tiny-lora-metrics.jsonl" 2>/dev/null
        ;;
    bench)
        for dtype in f32 f16; do
            # shellcheck disable=SC2086 # BENCH_ARGS is a list of options, e.g. "--shape tiny"
            run "bench-$dtype" 150 "$BIN/bench" --dtype $dtype --repeats 3 ${BENCH_ARGS:-} && json "bench-$dtype"
        done
        ;;
    hf)
        for dtype in f32 bf16; do
            run "hf-$dtype" 150 env PYTHONUNBUFFERED=1 python3 scripts/side-by-side/hf_bench.py \
                --device cuda --dtype $dtype --repeats 3 && json "hf-$dtype"
        done
        ;;
    bench7b)
        run bench-7b-f16 180 "$BIN/bench" --shape pro-7b --dtype f16 --repeats 1 \
            --only text,gen && json bench-7b-f16
        ;;
    shapes)
        # The shipped model's recipe (stage III, 2500 steps) on the GPU, its VQ tokenizer reused.
        run shapes 400 "$BIN/janus-shapes" build --vq-from models/shapes-janus --steps "${SHAPES_STEPS:-2500}" \
            --work "$ART/shapes-work" --out "$ART/shapes-model"
        cp "$ART/shapes-model/recipe.json" "$ART/shapes-recipe.json" 2>/dev/null
        rm -rf "$ART/shapes-work/data"
        ;;
    *) say "unknown step $step" ;;
    esac
    # After every step, so a run stopped at its time limit still returns what it made.
    tar -cf "$OUT/artifacts.tar" -C "$ART" --exclude='*.out' --exclude=shapes-work . 2>>"$LOG"
done
say "done"
