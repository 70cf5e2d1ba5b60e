#!/usr/bin/env bash
# Side-by-side benchmark: janus-rs vs HF transformers vs llama.cpp on the standard workload
# (docs/workload.md), in one run on one machine, printed as one markdown table.
#
#   scripts/side-by-side/run.sh                      # everything, all cores
#   scripts/side-by-side/run.sh --threads 2 --repeats 3 --hf-repeats 1 --half f16
#   scripts/side-by-side/run.sh --threads 2 --rounds 3 --half f16 --half-stages text,gen
#   scripts/side-by-side/run.sh --rounds 3 --half f16 --dry-run   # print the plan, do nothing
#   scripts/side-by-side/run.sh --skip-hf            # ours + llama.cpp only
#   scripts/side-by-side/run.sh --only ours,llamacpp --stages text
#   scripts/side-by-side/run.sh --setup-only         # install/build/write models, measure nothing
#   scripts/side-by-side/run.sh --llamacpp-depth 0   # llama.cpp decode from an empty cache
#   scripts/side-by-side/run.sh --threads 2 --rounds 2 --half f16 --half-stages text,gen --quant --images16
#
# Everything downloaded or built lives under .side-by-side/ in the repository root (git-ignored):
# venv/ (torch, transformers, gguf, cmake, ninja from PyPI), dl/ (the llama-cpp-python sdist),
# src/ (its unpacked source; vendor/llama.cpp is llama.cpp), llama-build/ (llama-bench),
# gguf/ (random-weight GGUFs), logs/, runs/<stamp>/ (each implementation's output) and
# results-<stamp>.json (raw JSON of all three plus the table). Every setup step is skipped when
# its output is already there, so a second run only measures.
#
# --quant adds the quantised tiers: llama-quantize (built next to llama-bench) makes
# gguf/janus-pro-1b-llm-q8_0.gguf and -q4_k_m.gguf from the F16 GGUF, and each round ends with
# ours --dtype q8_0, llama.cpp Q8_0, ours --dtype q4_k, llama.cpp Q4_K_M. --images16 measures
# images_per_minute_16 (16 images in one call + their VQ decode) once per dtype of ours and once
# for HF, after the rounds (and after HF's main run).
#
# --rounds N (N > 1) measures ours, ours-half and llama.cpp N times in alternation (round k:
# ours, ours-half, llamacpp-f32, llamacpp-f16 [, --quant: ours-q8_0, llamacpp-q8_0, ours-q4_k,
# llamacpp-q4_k_m]; outputs NAME-rK.json, llama-bench-DTYPE-rK.raw.json)
# and HF once after the rounds; the table gives the median over rounds and the min–max. This VM's
# memory bandwidth drifts in windows of tens of seconds to minutes, so with one measurement each,
# measured back to back, a ratio mostly tells which window each side landed in.
#
# llama.cpp's decode_ms_per_token is taken at depth 640 (llama-bench -d 640: decoding after 640
# cached positions, the same work as ours after the workload's 640-position prompt); the depth-0
# figure (WORKLOAD.md's llama-bench -p 640 -n 32) is measured too and given under the table.
# --llamacpp-depth D (passed to table.py as --depth D) changes that depth.
set -euo pipefail

ORIG_ARGS="$*"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$ROOT/.side-by-side"

TORCH_VERSION="${TORCH_VERSION:-2.15.0}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.24.0}"
GGUF_VERSION="${GGUF_VERSION:-0.19.0}"
LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PYTHON="${PYTHON:-python3}"
BUILD_JOBS="${BUILD_JOBS:-2}"

THREADS="$(nproc)"
REPEATS=3
HF_REPEATS=1
LLAMA_REPEATS=""
LLAMA_DEPTH=""  # empty: table.py's default, 640
STAGES=""
IMPLS="ours,hf,llamacpp"
HALF=""
HALF_STAGES=""
F16=1
SETUP_ONLY=0
ROUNDS=1
DRY_RUN=0
QUANT=0
IMAGES16=0

usage() {
  cat <<EOF
usage: scripts/side-by-side/run.sh [options]
  --threads N          threads for every implementation (default: nproc = $THREADS)
  --repeats R          timed runs after the warm-up for ours and llama-bench (default $REPEATS)
  --hf-repeats R       timed runs after the warm-up for HF transformers (default $HF_REPEATS)
  --llamacpp-repeats R llama-bench -r (default: --repeats)
  --llamacpp-depth D   llama.cpp's decode_ms_per_token after D cached positions (llama-bench -d;
                       table.py --depth; default 640: ours decodes after the 640-position prompt,
                       so equal work); the depth-0 decode is measured too, given under the table
  --stages LIST        stages for ours and HF: vision,text,gen,vq (default all)
  --only LIST          implementations to run: ours,hf,llamacpp (default all)
  --skip-ours | --skip-hf | --skip-llamacpp
  --half DTYPE         also run ours with 16-bit weights, f16 or bf16 (half-precision column;
                       compared with llama.cpp F16). Use f16 on CPUs: bf16 products are
                       converted to f32 on every call by burn-flex (~8 s/token)
  --half-stages LIST   stages of that run (default: --stages)
  --bf16 | --bf16-stages LIST   = --half bf16 [--half-stages LIST] (older spelling)
  --no-f16             skip the llama.cpp F16 model
  --quant              quantised tiers too: setup builds llama-quantize and makes Q8_0 and Q4_K_M
                       GGUFs from the F16 one; every round then also measures ours --dtype q8_0,
                       llama.cpp Q8_0, ours --dtype q4_k, llama.cpp Q4_K_M (after the others; ours
                       with the --half-stages selection, else --stages)
  --images16           images_per_minute_16: ours --only images16 once per dtype (f32, the --half
                       dtype, q8_0 and q4_k with --quant), then HF's images16 stage, once each,
                       after the rounds and HF's main run (minutes per run: 16 images of 576
                       tokens, CFG 5, 32 rows a step, + their VQ decode; ~17 GB at f32)
  --rounds N           measure ours, ours-half and llama.cpp N times, alternating (round k: ours,
                       ours-half, llamacpp-f32, llamacpp-f16, then with --quant ours-q8_0,
                       llamacpp-q8_0, ours-q4_k, llamacpp-q4_k_m), HF once after the rounds; the table
                       gives each cell's median over the rounds and its min-max (default 1: each
                       once, in the order ours, ours-half, hf, llamacpp-f32, llamacpp-f16). This
                       VM's memory bandwidth drifts in windows of tens of seconds to minutes, so
                       one measurement each, back to back, makes the ratios mostly luck
  --setup-only         do the setup steps (venv, llama.cpp build, GGUFs, cargo build) and stop
  --dry-run            print what would be measured, in order, and where it would go; no setup,
                       no measuring, nothing written
  -h | --help
environment: TORCH_VERSION=$TORCH_VERSION TRANSFORMERS_VERSION=$TRANSFORMERS_VERSION
  GGUF_VERSION=$GGUF_VERSION LLAMA_CPP_PYTHON_VERSION=$LLAMA_CPP_PYTHON_VERSION PYTHON=$PYTHON
  BUILD_JOBS=$BUILD_JOBS (parallel jobs for the llama.cpp and cargo builds)
EOF
}

drop_impl() { IMPLS="$(echo ",$IMPLS," | sed "s/,$1,/,/g; s/^,//; s/,$//")"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --threads|--repeats|--hf-repeats|--llamacpp-repeats|--llamacpp-depth|--stages|--only|--half|--half-stages|--bf16-stages|--rounds)
      [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; usage >&2; exit 2; } ;;
  esac
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --hf-repeats) HF_REPEATS="$2"; shift 2 ;;
    --llamacpp-repeats) LLAMA_REPEATS="$2"; shift 2 ;;
    --llamacpp-depth) LLAMA_DEPTH="$2"; shift 2 ;;
    --stages) STAGES="$2"; shift 2 ;;
    --only) IMPLS="$2"; shift 2 ;;
    --skip-ours) drop_impl ours; shift ;;
    --skip-hf) drop_impl hf; shift ;;
    --skip-llamacpp) drop_impl llamacpp; shift ;;
    --half) HALF="$2"; shift 2 ;;
    --half-stages) HALF_STAGES="$2"; shift 2 ;;
    --bf16) HALF=bf16; shift ;;
    --bf16-stages) HALF=bf16; HALF_STAGES="$2"; shift 2 ;;
    --no-f16) F16=0; shift ;;
    --quant) QUANT=1; shift ;;
    --images16) IMAGES16=1; shift ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
LLAMA_REPEATS="${LLAMA_REPEATS:-$REPEATS}"
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: --rounds needs a positive integer (1, 2, 3, ...), got '$ROUNDS'" >&2; exit 2
fi
if [ -n "$LLAMA_DEPTH" ] && ! [[ "$LLAMA_DEPTH" =~ ^[0-9]+$ ]]; then
  echo "run.sh: --llamacpp-depth needs a number of positions (0, 640, ...), got '$LLAMA_DEPTH'" >&2; exit 2
fi
LLAMA_DEPTH_ARGS=()
[ -n "$LLAMA_DEPTH" ] && LLAMA_DEPTH_ARGS=(--depth "$LLAMA_DEPTH")
for i in ${IMPLS//,/ }; do
  case "$i" in ours|hf|llamacpp) ;; *) echo "run.sh: unknown implementation '$i' (ours,hf,llamacpp)" >&2; exit 2 ;; esac
done
want() { [[ ",$IMPLS," == *",$1,"* ]]; }

LOGS="$WORK/logs"
VENV="$WORK/venv"
PY="$VENV/bin/python"
LLAMA_BENCH="$WORK/llama-build/bin/llama-bench"
LLAMA_QUANTIZE="$WORK/llama-build/bin/llama-quantize"
GGUF_F32="$WORK/gguf/janus-pro-1b-llm-f32.gguf"
GGUF_F16="$WORK/gguf/janus-pro-1b-llm-f16.gguf"
GGUF_Q8_0="$WORK/gguf/janus-pro-1b-llm-q8_0.gguf"
GGUF_Q4_K_M="$WORK/gguf/janus-pro-1b-llm-q4_k_m.gguf"
OURS_BIN="$WORK/bin/janus-bench"

say() { echo "== side-by-side: $*" >&2; }
die() { echo "side-by-side: ERROR: $*" >&2; exit 1; }

# step NAME CMD...: runs CMD with its output in logs/NAME.log; on failure names the step, shows
# the end of the log and stops.
step() {
  local name="$1"; shift
  local log="$LOGS/$name.log"
  say "$name (log: ${log#$ROOT/})"
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "---- last lines of $log ----" >&2
    tail -n 30 "$log" >&2
    die "step '$name' failed (exit $rc); full log: $log"
  fi
}

mem_check() { # mem_check WHAT GIB: warns when less memory is available than the stage needs
  [ "$DRY_RUN" = 1 ] && return 0
  local avail_kb
  avail_kb="$(awk '/MemAvailable/ {print $2}' /proc/meminfo)"
  if [ "$avail_kb" -lt $(( $2 * 1024 * 1024 )) ]; then
    say "WARNING: $1 needs about $2 GiB; only $(( avail_kb / 1024 / 1024 )) GiB available now (other work on this machine?)"
  fi
}

# --- the measurement plan (run by the measuring part at the end, printed by --dry-run) --------

# Our quantised tiers, and llama.cpp's GGUF types compared with them (same order).
QUANT_OURS=(q8_0 q4_k)
QUANT_LLAMA=(q8_0 q4_k_m)
quant_gguf() { case "$1" in q8_0) echo "$GGUF_Q8_0" ;; q4_k_m) echo "$GGUF_Q4_K_M" ;; esac; }

STAGE_ARGS=()
[ -n "$STAGES" ] && STAGE_ARGS=(--only "$STAGES")
HALF_ARGS=("${STAGE_ARGS[@]}")
[ -n "$HALF_STAGES" ] && HALF_ARGS=(--only "$HALF_STAGES")

# rsuffix K: the file-name suffix of round K: none with --rounds 1 (a single run's names), -rK
# otherwise.
rsuffix() { if [ "$ROUNDS" = 1 ]; then echo ""; else echo "-r$1"; fi; }

measure_hf() {
  mem_check "HF transformers" 10
  measure hf "$PY" "$HERE/hf_bench.py" --threads "$THREADS" --repeats "$HF_REPEATS" ${STAGES:+--only "$STAGES"}
}

# measure_round K: ours, ours-half, llamacpp-f32, llamacpp-f16 (those enabled); with --rounds 1
# HF between ours and llama.cpp, as before --rounds existed. With --quant, then ours-q8_0,
# llamacpp-q8_0, ours-q4_k, llamacpp-q4_k_m (ours with the half run's stage selection).
measure_round() {
  local s
  s="$(rsuffix "$1")"
  if want ours; then
    mem_check "ours (f32)" 9
    # = cargo run --release -p janus-perf --bin bench -- ..., on the binary built above.
    measure "ours$s" "$OURS_BIN" --shape pro-1b --dtype f32 --threads "$THREADS" --repeats "$REPEATS" "${STAGE_ARGS[@]}"
    if [ -n "$HALF" ]; then
      mem_check "ours ($HALF)" 5
      measure "ours-half$s" "$OURS_BIN" --shape pro-1b --dtype "$HALF" --threads "$THREADS" --repeats "$REPEATS" "${HALF_ARGS[@]}"
    fi
  fi
  if [ "$ROUNDS" = 1 ] && want hf; then
    measure_hf
  fi
  if want llamacpp; then
    mem_check "llama.cpp f32" 8
    measure "llamacpp-f32$s" "$PY" "$HERE/table.py" llamacpp --bench "$LLAMA_BENCH" --model "$GGUF_F32" \
      --dtype f32 --threads "$THREADS" --repeats "$LLAMA_REPEATS" "${LLAMA_DEPTH_ARGS[@]}" --raw-out "$RUN/llama-bench-f32$s.raw.json"
    if [ "$F16" = 1 ]; then
      measure "llamacpp-f16$s" "$PY" "$HERE/table.py" llamacpp --bench "$LLAMA_BENCH" --model "$GGUF_F16" \
        --dtype f16 --threads "$THREADS" --repeats "$LLAMA_REPEATS" "${LLAMA_DEPTH_ARGS[@]}" --raw-out "$RUN/llama-bench-f16$s.raw.json"
    fi
  fi
  if [ "$QUANT" = 1 ]; then
    local i q l
    for i in 0 1; do
      q="${QUANT_OURS[$i]}"; l="${QUANT_LLAMA[$i]}"
      if want ours; then
        mem_check "ours ($q)" 4
        measure "ours-$q$s" "$OURS_BIN" --shape pro-1b --dtype "$q" --threads "$THREADS" --repeats "$REPEATS" "${HALF_ARGS[@]}"
      fi
      if want llamacpp; then
        mem_check "llama.cpp $l" 2
        measure "llamacpp-$l$s" "$PY" "$HERE/table.py" llamacpp --bench "$LLAMA_BENCH" --model "$(quant_gguf "$l")" \
          --dtype "$l" --threads "$THREADS" --repeats "$LLAMA_REPEATS" "${LLAMA_DEPTH_ARGS[@]}" --raw-out "$RUN/llama-bench-$l$s.raw.json"
      fi
    done
  fi
}

# measure_images16: images_per_minute_16 (--images16), once each: ours f32, the --half dtype,
# q8_0 and q4_k (--quant), then HF. 32 rows of KV cache at 608 positions (≈ 7.6 GB in f32) on
# top of the weights.
measure_images16() {
  local d
  if want ours; then
    for d in f32 $HALF $([ "$QUANT" = 1 ] && echo "${QUANT_OURS[*]}"); do
      mem_check "ours images16 ($d)" "$(case "$d" in f32) echo 17 ;; f16|bf16) echo 11 ;; *) echo 12 ;; esac)"
      measure "ours-images16-$d" "$OURS_BIN" --shape pro-1b --dtype "$d" --threads "$THREADS" --repeats 1 --only images16
    done
  fi
  if want hf; then
    mem_check "HF transformers images16" 17
    measure hf-images16 "$PY" "$HERE/hf_bench.py" --threads "$THREADS" --only images16
  fi
}

# measure_all: the rounds, then (with --rounds > 1) HF once: it takes many minutes.
measure_all() {
  local k
  for ((k = 1; k <= ROUNDS; k++)); do
    [ "$ROUNDS" = 1 ] || say "round $k of $ROUNDS"
    measure_round "$k"
  done
  if [ "$ROUNDS" != 1 ] && want hf; then
    measure_hf
  fi
  if [ "$IMAGES16" = 1 ]; then
    measure_images16
  fi
}

# merge_files: sets MERGE_FILES to table.py merge's input files under $RUN, one per round for the
# alternated implementations (files of skipped implementations do not exist; the merge ignores them).
merge_files() {
  local k s
  MERGE_FILES=()
  for ((k = 1; k <= ROUNDS; k++)); do
    s="$(rsuffix "$k")"
    MERGE_FILES+=(--ours "$RUN/ours$s.json" --ours-half "$RUN/ours-half$s.json"
      --llamacpp-f32 "$RUN/llamacpp-f32$s.json" --llamacpp-f16 "$RUN/llamacpp-f16$s.json"
      --llamacpp-f32-raw "$RUN/llama-bench-f32$s.raw.json" --llamacpp-f16-raw "$RUN/llama-bench-f16$s.raw.json")
    if [ "$QUANT" = 1 ]; then
      MERGE_FILES+=(--ours-q8_0 "$RUN/ours-q8_0$s.json" --llamacpp-q8_0 "$RUN/llamacpp-q8_0$s.json"
        --ours-q4_k "$RUN/ours-q4_k$s.json" --llamacpp-q4_k_m "$RUN/llamacpp-q4_k_m$s.json"
        --llamacpp-q8_0-raw "$RUN/llama-bench-q8_0$s.raw.json" --llamacpp-q4_k_m-raw "$RUN/llama-bench-q4_k_m$s.raw.json")
    fi
  done
  MERGE_FILES+=(--hf "$RUN/hf.json")
  if [ "$IMAGES16" = 1 ]; then
    MERGE_FILES+=(--ours-images16 "$RUN/ours-images16-f32.json" --hf-images16 "$RUN/hf-images16.json")
    [ -n "$HALF" ] && MERGE_FILES+=(--ours-half-images16 "$RUN/ours-images16-$HALF.json")
    if [ "$QUANT" = 1 ]; then
      MERGE_FILES+=(--ours-q8_0-images16 "$RUN/ours-images16-q8_0.json" --ours-q4_k-images16 "$RUN/ours-images16-q4_k.json")
    fi
  fi
  return 0
}

if [ "$DRY_RUN" = 1 ]; then
  RUN="$WORK/runs/<stamp>"
  # measure NAME CMD...: prints the command and where its output would go.
  measure() {
    local name="$1"; shift
    echo "measure $name > ${RUN#"$ROOT"/}/$name.json 2> ${RUN#"$ROOT"/}/$name.log: $*"
  }
  echo "dry run: implementations $IMPLS, $ROUNDS round(s); no setup, nothing measured or written"
  want llamacpp && echo "llama.cpp decode_ms_per_token at depth ${LLAMA_DEPTH:-640} (table.py --depth; plus depth 0)"
  if [ "$QUANT" = 1 ] && want llamacpp; then
    echo "setup (--quant): llama-quantize ${GGUF_F16#"$ROOT"/} -> ${GGUF_Q8_0#"$ROOT"/} (Q8_0), ${GGUF_Q4_K_M#"$ROOT"/} (Q4_K_M), each unless it exists"
  fi
  measure_all
  merge_files
  echo "merge: table.py merge ${MERGE_FILES[*]//"$ROOT"\//} --meta ${RUN#"$ROOT"/}/meta.json ..."
  exit 0
fi

# --- setup: Python environment ---------------------------------------------------------------

mkdir -p "$WORK/logs" "$WORK/dl" "$WORK/gguf"

need_venv=0
want hf && need_venv=1
want llamacpp && need_venv=1
if [ "$need_venv" = 1 ]; then
  if [ ! -x "$PY" ]; then
    step venv-create "$PYTHON" -m venv "$VENV"
    step venv-pip "$PY" -m pip install --upgrade pip
  fi
  BASE_MARK="$VENV/.side-by-side-base-gguf$GGUF_VERSION"
  if [ ! -f "$BASE_MARK" ]; then
    # scikit-build-core: lets `pip download` read the llama-cpp-python sdist's metadata without
    # building cmake and ninja from source in an isolated build environment.
    step venv-base "$PY" -m pip install "gguf==$GGUF_VERSION" numpy cmake ninja scikit-build-core
    touch "$BASE_MARK"
  fi
  HF_MARK="$VENV/.side-by-side-hf-torch$TORCH_VERSION-transformers$TRANSFORMERS_VERSION"
  if want hf && [ ! -f "$HF_MARK" ]; then
    # PyPI's Linux torch wheel is the CUDA build: it pulls the CUDA runtime wheels (~4 GB) and
    # does not import without them. The CPU-only wheels live on PyTorch's own index, which is
    # not reachable from here, so the PyPI build is used; it runs on the CPU all the same.
    step venv-hf "$PY" -m pip install "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION"
    touch "$HF_MARK"
  fi
fi

# --- setup: llama.cpp from the llama-cpp-python sdist, and the GGUFs -------------------------

if want llamacpp; then
  SDIST="$WORK/dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
  SRC="$WORK/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
  LLAMA_SRC="$SRC/vendor/llama.cpp"
  if [ ! -f "$SDIST" ]; then
    step sdist-download "$PY" -m pip download --no-binary :all: --no-deps --no-build-isolation \
      -d "$WORK/dl" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    [ -f "$SDIST" ] || die "pip download did not leave $SDIST"
  fi
  if [ ! -f "$LLAMA_SRC/CMakeLists.txt" ]; then
    mkdir -p "$WORK/src"
    step sdist-unpack tar -xzf "$SDIST" -C "$WORK/src"
    [ -f "$LLAMA_SRC/CMakeLists.txt" ] || die "the sdist has no vendor/llama.cpp/CMakeLists.txt"
  fi
  # llama-quantize (with --quant) is built in the same build directory: a build directory that
  # already has llama-bench only compiles the quantize tool.
  LLAMA_TARGETS=(llama-bench)
  [ "$QUANT" = 1 ] && LLAMA_TARGETS+=(llama-quantize)
  need_build=0
  [ -x "$LLAMA_BENCH" ] || need_build=1
  if [ "$QUANT" = 1 ] && [ ! -x "$LLAMA_QUANTIZE" ]; then need_build=1; fi
  if [ "$need_build" = 1 ]; then
    # CPU only, -march=native (GGML_NATIVE), static, just llama-bench (and llama-quantize) and
    # what they link. On a CPU that lists AMX, -march=native compiles GGML's AMX kernels, and a
    # VM whose hypervisor does not enable the tile state kills them with SIGILL (tilezero) on the
    # first prefill; there, and for a like-for-like comparison (janus-rs uses no AMX), the build
    # names this CPU's x86 features one by one instead, AMX left out.
    ISA_ARGS=(-DGGML_NATIVE=ON)
    if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
      ISA_ARGS=(-DGGML_NATIVE=OFF)
      for f in avx:GGML_AVX avx2:GGML_AVX2 fma:GGML_FMA f16c:GGML_F16C bmi2:GGML_BMI2 \
               avx_vnni:GGML_AVX_VNNI avx512f:GGML_AVX512 avx512vbmi:GGML_AVX512_VBMI \
               avx512_vnni:GGML_AVX512_VNNI avx512_bf16:GGML_AVX512_BF16; do
        if grep -qw "${f%%:*}" /proc/cpuinfo; then ISA_ARGS+=("-D${f#*:}=ON"); else ISA_ARGS+=("-D${f#*:}=OFF"); fi
      done
      say "this CPU lists AMX: llama.cpp built without it (${ISA_ARGS[*]})"
    fi
    step llama-configure env PATH="$VENV/bin:$PATH" cmake -S "$LLAMA_SRC" -B "$WORK/llama-build" -G Ninja \
      -DCMAKE_BUILD_TYPE=Release "${ISA_ARGS[@]}" -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF
    step llama-build env PATH="$VENV/bin:$PATH" cmake --build "$WORK/llama-build" --target "${LLAMA_TARGETS[@]}" -j "$BUILD_JOBS"
    [ -x "$LLAMA_BENCH" ] || die "the llama.cpp build did not produce $LLAMA_BENCH"
    if [ "$QUANT" = 1 ] && [ ! -x "$LLAMA_QUANTIZE" ]; then
      die "the llama.cpp build did not produce $LLAMA_QUANTIZE"
    fi
  fi
  # make_gguf.py writes to NAME.partial and renames at the end: a file that exists is complete.
  [ -f "$GGUF_F32" ] || step gguf-f32 "$PY" "$HERE/make_gguf.py" --out "$GGUF_F32" --dtype f32
  # The quantised GGUFs are made from the F16 one, so --quant needs it even with --no-f16.
  if { [ "$F16" = 1 ] || [ "$QUANT" = 1 ]; } && [ ! -f "$GGUF_F16" ]; then
    step gguf-f16 "$PY" "$HERE/make_gguf.py" --out "$GGUF_F16" --dtype f16
  fi
  if [ "$QUANT" = 1 ]; then
    # quantize_gguf IN OUT TYPE: llama-quantize into OUT.partial, renamed to OUT when complete
    # (as make_gguf.py does), so a file that exists is complete.
    quantize_gguf() {
      rm -f "$2.partial"
      # (set -e is off inside step's `|| rc=$?`: the && carries the failure.)
      "$LLAMA_QUANTIZE" "$1" "$2.partial" "$3" && mv "$2.partial" "$2"
    }
    [ -f "$GGUF_Q8_0" ] || step gguf-q8_0 quantize_gguf "$GGUF_F16" "$GGUF_Q8_0" Q8_0
    [ -f "$GGUF_Q4_K_M" ] || step gguf-q4_k_m quantize_gguf "$GGUF_F16" "$GGUF_Q4_K_M" Q4_K_M
  fi
fi

# --- setup: our bench binary ---------------------------------------------------------------

git_desc() {
  local d
  d="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  # Only what goes into the bench binary counts (Rust sources, manifests, the lock file).
  if [ -n "$(cd "$ROOT" && git status --porcelain --untracked-files=no -- '*.rs' '*.toml' Cargo.lock 2>/dev/null)" ]; then
    d="$d (+ uncommitted changes)"
  fi
  echo "$d"
}
OURS_GIT=""
if want ours; then
  # Waits for the cargo lock when another build holds it. The binary is copied out of target/
  # so that every row of this run times the same build even if someone rebuilds meanwhile.
  OURS_GIT="$(git_desc)"
  step cargo-build bash -c "cd '$ROOT' && cargo build --release -p janus-perf --bin bench -j '$BUILD_JOBS'"
  mkdir -p "$WORK/bin"
  cp "$ROOT/target/release/bench" "$OURS_BIN.tmp" && mv "$OURS_BIN.tmp" "$OURS_BIN" \
    || die "cannot copy target/release/bench"
fi

if [ "$SETUP_ONLY" = 1 ]; then
  say "setup done (--setup-only)"
  exit 0
fi

# --- measure -------------------------------------------------------------------------------

STAMP="$(date +%Y%m%d-%H%M%S)"
RUN="$WORK/runs/$STAMP"
mkdir -p "$RUN"
LOADS="$RUN/loads.txt"
: >"$LOADS"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
note_load() { echo "$1	$(loadavg)" >>"$LOADS"; }

# measure NAME CMD...: the implementation's stdout goes to runs/<stamp>/NAME.json (the last line
# is its JSON object), stderr to NAME.log; the load average is noted before and after.
measure() {
  local name="$1"; shift
  say "measuring $name: $*"
  note_load "$name-before"
  local rc=0
  "$@" >"$RUN/$name.json" 2>"$RUN/$name.log" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "---- last lines of $RUN/$name.log ----" >&2
    tail -n 30 "$RUN/$name.log" >&2
    die "measuring $name failed (exit $rc); stdout: $RUN/$name.json, stderr: $RUN/$name.log"
  fi
  note_load "$name-after"
  tail -n 1 "$RUN/$name.json" >&2
}

measure_all

# --- merge ---------------------------------------------------------------------------------

GIT_DESC="${OURS_GIT:-$(git_desc)}"
MERGE_PY="$PY"; [ -x "$MERGE_PY" ] || MERGE_PY="$PYTHON"
"$MERGE_PY" - "$RUN/meta.json" "$LOADS" <<EOF
import json, platform, sys
loads = {}
for line in open(sys.argv[2]):
    k, v = line.rstrip("\n").split("\t")
    loads[k] = v
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
json.dump({
    "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
    "host": platform.node(),
    "cpu": f"{cpu}, {$(nproc)} cores, {round(int(open('/proc/meminfo').readline().split()[1]) / 2**20)} GiB",
    "threads": $THREADS,
    "repeats": $REPEATS,
    "hf_repeats": $HF_REPEATS,
    "llamacpp_repeats": $LLAMA_REPEATS,
    "llamacpp_depth": ${LLAMA_DEPTH:-640},
    "rounds": $ROUNDS,
    "git": "$GIT_DESC",
    "command": "scripts/side-by-side/run.sh ${ORIG_ARGS:-}",
    "versions": {"torch": "$TORCH_VERSION", "transformers": "$TRANSFORMERS_VERSION",
                 "llama-cpp-python sdist": "$LLAMA_CPP_PYTHON_VERSION", "gguf": "$GGUF_VERSION"},
    "load": loads,
}, open(sys.argv[1], "w"), indent=2)
EOF

RESULTS="$WORK/results-$STAMP.json"
say "table (results: ${RESULTS#$ROOT/}, outputs: ${RUN#$ROOT/})"
merge_files
"$MERGE_PY" "$HERE/table.py" merge "${MERGE_FILES[@]}" \
  --meta "$RUN/meta.json" --results-out "$RESULTS" --markdown-out "$RUN/table.md"
