#!/usr/bin/env bash
# Decode duel: our decode step (or image-generation step) against llama.cpp's decode, in N
# closely alternated pairs, with the ratio taken within each pair.
#
#   scripts/side-by-side/duel.sh                       # f32 decode, 8 pairs, 2 threads
#   scripts/side-by-side/duel.sh --dtype f16 --pairs 6 # f16 weights vs llama.cpp F16
#   scripts/side-by-side/duel.sh --stage gen           # our CFG generation step vs llama.cpp decode
#   scripts/side-by-side/duel.sh --separate            # each of ours a fresh process (older way)
#
# By default ours is one process, built and prefilled once, that runs a block of steps each time
# llama-bench has finished one run, so the two timed parts are seconds apart (decode blocks
# continue one cache: its length grows by --steps per pair). --separate starts ours afresh for
# every pair (model build and prefill between the two timed parts, ≈ 25 s).
#
# Why: this VM's memory bandwidth drifts between windows of ≈ 32 and ≈ 48 GB/s lasting tens of
# seconds to minutes (docs/perf-notes.md §11), and a decode step is bandwidth-bound, so a
# whole-workload round (minutes per implementation) can put ours and llama.cpp in different
# windows. Each pair here takes ≈ 30 s, and the median of the per-pair ratios is what is compared.
#
# Needs what run.sh sets up (llama-bench and the GGUFs under .side-by-side/; run
# `scripts/side-by-side/run.sh --setup-only` first) and builds our `llm_phases` binary (janus-perf).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$ROOT/.side-by-side"
PAIRS=8
STEPS=32
THREADS=2
DTYPE=f32
STAGE=decode
SEPARATE=
DEPTH=0

usage() {
  cat <<EOF
usage: scripts/side-by-side/duel.sh [--pairs N] [--steps S] [--threads T] [--dtype f32|f16] [--stage decode|gen] [--depth D] [--separate]
  --pairs N    alternated pairs (default $PAIRS)
  --steps S    decode steps per measurement, both sides (default $STEPS)
  --threads T  threads for both (default $THREADS)
  --dtype D    f32 (llama.cpp f32 GGUF) or f16 (F16 GGUF) (default $DTYPE)
  --stage S    decode (our decode step) or gen (our two-row CFG generation step); llama.cpp
               always runs its decode (default $STAGE)
  --depth D    llama-bench's decode starts after D cached positions (-d; default $DEPTH). Ours
               decodes after the workload's 640-position prompt: --depth 640 compares equal work
  --separate   a fresh process of ours per pair instead of one process running a block per pair
EOF
}

need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "duel.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) need "$@"; PAIRS="$2"; shift 2 ;;
    --steps) need "$@"; STEPS="$2"; shift 2 ;;
    --threads) need "$@"; THREADS="$2"; shift 2 ;;
    --dtype) need "$@"; DTYPE="$2"; shift 2 ;;
    --stage) need "$@"; STAGE="$2"; shift 2 ;;
    --depth) need "$@"; DEPTH="$2"; shift 2 ;;
    --separate) SEPARATE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "duel.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in PAIRS STEPS THREADS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "duel.sh: --${v,,} needs a positive integer, got '${!v}'" >&2; exit 2; }
done
case "$DTYPE" in f32|f16) ;; *) echo "duel.sh: --dtype is f32 or f16, got '$DTYPE'" >&2; exit 2 ;; esac
case "$DEPTH" in *[!0-9]*|"") echo "duel.sh: --depth is a number, got '$DEPTH'" >&2; exit 2 ;; esac
case "$STAGE" in decode|gen) ;; *) echo "duel.sh: --stage is decode or gen, got '$STAGE'" >&2; exit 2 ;; esac

LLAMA_BENCH="$WORK/llama-build/bin/llama-bench"
GGUF="$WORK/gguf/janus-pro-1b-llm-$DTYPE.gguf"
[ -x "$LLAMA_BENCH" ] || { echo "duel.sh: $LLAMA_BENCH missing: run scripts/side-by-side/run.sh --setup-only" >&2; exit 1; }
[ -f "$GGUF" ] || { echo "duel.sh: $GGUF missing: run scripts/side-by-side/run.sh --setup-only" >&2; exit 1; }

(cd "$ROOT" && cargo build --release -p janus-perf --bin llm_phases) >&2
OURS="$ROOT/target/release/llm_phases"
export RAYON_NUM_THREADS="$THREADS"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
echo "pair	ours_${STAGE}_ms	llamacpp_decode_ms	ratio	load"
llama_ms() {
  "$LLAMA_BENCH" -m "$GGUF" -p 0 -n "$STEPS" -d "$DEPTH" -r 1 -t "$THREADS" -o json >"$OUT/l.json" 2>/dev/null
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; print("%.1f" % (1e3 / r["avg_ts"]))' "$OUT/l.json"
}
record() {
  local ratio
  ratio="$(python3 -c "print(f'{$2/$3:.3f}')")"
  echo "$1	$2	$3	$ratio	$(cut -d' ' -f1 /proc/loadavg)"
  echo "$2 $3 $ratio" >>"$OUT/pairs"
}
if [ -n "$SEPARATE" ]; then
  for i in $(seq 1 "$PAIRS"); do
    ours="$("$OURS" "$STAGE" "$STEPS" "$DTYPE" 2>/dev/null | awk '/_ms/ {print $2}')"
    record "$i" "$ours" "$(llama_ms)"
  done
else
  coproc BLOCKS { "$OURS" "$STAGE" "$STEPS" "$DTYPE" "$PAIRS" 2>/dev/null; }
  read -r line <&"${BLOCKS[0]}" || true
  [ "$line" = ready ] || { echo "duel.sh: llm_phases did not start (got '$line')" >&2; exit 1; }
  for i in $(seq 1 "$PAIRS"); do
    llama="$(llama_ms)"
    echo go >&"${BLOCKS[1]}"
    read -r line <&"${BLOCKS[0]}" || { echo "duel.sh: llm_phases stopped" >&2; exit 1; }
    record "$i" "${line#block_ms }" "$llama"
  done
  wait
fi
python3 - "$OUT/pairs" "$STAGE" "$DTYPE" <<'EOF'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
ours, llama, ratio = zip(*rows)
print(f"median over {len(rows)} pairs: ours {sys.argv[2]} {statistics.median(ours):.1f} ms, "
      f"llama.cpp {sys.argv[3]} decode {statistics.median(llama):.1f} ms, "
      f"ratio {statistics.median(ratio):.3f} (min {min(ratio):.3f}, max {max(ratio):.3f})")
EOF
