#!/usr/bin/env python3
"""Side-by-side helpers: run llama-bench as a WORKLOAD line, merge results, print the table.

    # run llama-bench, keep its raw JSON, print one WORKLOAD JSON line (last line of stdout):
    # prefill from pp640, decode_ms_per_token from tg32 after --depth (640) cached positions,
    # decode_ms_per_token_d0 from tg32 on an empty cache
    python table.py llamacpp --bench BIN --model M.gguf --dtype f32 --threads 2 --repeats 3 \
        [--depth 640] --raw-out raw.json

    # merge the JSON lines of every implementation into one results file and print the table
    python table.py merge --ours ours.json [--ours-half h.json] [--hf hf.json] \
        [--llamacpp-f32 l32.json] [--llamacpp-f16 l16.json] [--meta meta.json] \
        --results-out results.json [--markdown-out table.md]

    # several rounds (run.sh --rounds N): repeat an implementation's option, once per round
    python table.py merge --ours ours-r1.json --ours ours-r2.json --ours ours-r3.json \
        --llamacpp-f32 llamacpp-f32-r1.json --llamacpp-f32 llamacpp-f32-r2.json ... \
        [--llamacpp-f32-raw llama-bench-f32-r1.raw.json ...] --results-out results.json

    # quantised tiers (run.sh --quant): four more columns and their target ratios
    python table.py merge ... --ours-q8_0 oq8.json --llamacpp-q8_0 lq8.json \
        --ours-q4_k oq4.json --llamacpp-q4_k_m lq4.json [--llamacpp-q8_0-raw ...] ...

    # images_per_minute_16 (run.sh --images16): each column's `--only images16` output, measured
    # once; its images_per_minute_16 and images16_s go into that column (row images_per_minute_16)
    python table.py merge ... --ours-images16 oi.json --hf-images16 hi.json \
        [--ours-half-images16 ...] [--ours-q8_0-images16 ...] [--ours-q4_k-images16 ...]

Each input file holds the implementation's stdout; the WORKLOAD JSON object is its last
non-empty line that parses as JSON. Missing inputs (a skipped implementation) become `–`.
Without quantised or images16 inputs the table is the one from before those existed.
With several files for one implementation, each key's figure is the median over the rounds
(`peak_rss_mb`: the maximum), the table shows the min–max after it, and the results JSON keeps
every round's object under "rounds".
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

KEYS = [
    ("vision_ms", "ms"),
    ("prefill_ms", "ms"),
    ("decode_ms_per_token", "ms"),
    ("gen_ms_per_step", "ms"),
    ("vq_decode_ms", "ms"),
    ("image_s_estimate", "s"),
    ("peak_rss_mb", "MiB"),
]

# Keys that are not table rows but merge over rounds all the same (median): llama.cpp's decode
# from an empty cache, for WORKLOAD.md's `llama-bench -p 640 -n 32`; the images16 stage's keys
# (normally measured once, outside the rounds, and merged in from the --*-images16 files).
EXTRA_KEYS = ["decode_ms_per_token_d0", "images_per_minute_16", "images16_s"]

# The row of the images16 stage (higher is better), shown only when some column has it.
IMAGES_KEY = ("images_per_minute_16", "images/min")

# Weight bytes a decode step must read (WORKLOAD.md): 24 layers + lm_head.
DECODE_GB = {"f32": 5.8, "bf16": 2.9, "f16": 2.9}

# The language model's linear weights (24 layers + lm_head; the embedding is one row a token).
_H, _M, _V, _LAYERS = 2048, 5632, 102400, 24
_ATTN, _MLP = 4 * _H * _H, 3 * _H * _M   # q, k, v, o; gate, up, down
_V_DOWN = _H * _H + _H * _M            # one layer's v_proj + down_proj
_LAYER_W = _ATTN + _MLP
_Q8_0, _Q4_K, _Q6_K = 34 / 32, 144 / 256, 210 / 256  # GGML bytes per weight


def _quant_gb():
    """Weight GB a quantised decode step reads, by dtype name (approximate: block scales
    included, the mix as each side documents it, and nothing for the f32 norms)."""
    all_w = _LAYERS * _LAYER_W + _V * _H
    # ours q4_k: lm_head and layers 0 and 23's v_proj / down_proj in Q8_0, the rest Q4_K.
    ours_q8 = _V * _H + 2 * _V_DOWN
    # llama.cpp Q4_K_M (llama_tensor_get_type): output in Q6_K; attn_v and ffn_down in Q6_K in
    # the layers of use_more_bits(i, 24) (i < 3, i >= 21, (i - 3) % 3 == 2: 12 layers); the rest
    # Q4_K.
    more_bits = [i for i in range(_LAYERS) if i < _LAYERS // 8 or i >= 7 * _LAYERS // 8
                 or (i - _LAYERS // 8) % 3 == 2]
    llama_q6 = _V * _H + len(more_bits) * _V_DOWN
    return {
        "q8_0": all_w * _Q8_0 / 1e9,
        "q4_k": (ours_q8 * _Q8_0 + (all_w - ours_q8) * _Q4_K) / 1e9,
        "q4_k_m": (llama_q6 * _Q6_K + (all_w - llama_q6) * _Q4_K) / 1e9,
    }


QUANT_GB = _quant_gb()

# The quantised tiers' columns (run.sh --quant), after the others.
QUANT_COLS = [("ours_q8_0", "ours q8_0"), ("llamacpp_q8_0", "llama.cpp Q8_0"),
              ("ours_q4_k", "ours q4_k"), ("llamacpp_q4_k_m", "llama.cpp Q4_K_M")]

# Their target ratios, added to a row's target cell when the quantised columns are there:
# (row key, numerator impl, numerator key, denominator impl, denominator key, label, target
# text, test).
QUANT_TARGETS = [
    ("prefill_ms", "ours_q8_0", "prefill_ms", "ours", "prefill_ms", "ours q8_0/ours f32",
     "≤ 1.05", lambda r: r <= 1.05),
    ("prefill_ms", "ours_q4_k", "prefill_ms", "ours", "prefill_ms", "ours q4_k/ours f32",
     "≤ 1.05", lambda r: r <= 1.05),
    ("decode_ms_per_token", "ours_q8_0", "decode_ms_per_token", "llamacpp_q8_0",
     "decode_ms_per_token", "ours q8_0/llama.cpp Q8_0", "≤ 1.0", lambda r: r <= 1.0),
    ("decode_ms_per_token", "ours_q4_k", "decode_ms_per_token", "llamacpp_q4_k_m",
     "decode_ms_per_token", "ours q4_k/llama.cpp Q4_K_M", "≤ 1.15", lambda r: r <= 1.15),
    ("gen_ms_per_step", "ours_q8_0", "gen_ms_per_step", "llamacpp_q8_0", "decode_ms_per_token",
     "ours q8_0 gen step/llama.cpp Q8_0 decode", "≤ 1.25", lambda r: r <= 1.25),
    ("gen_ms_per_step", "ours_q4_k", "gen_ms_per_step", "llamacpp_q4_k_m", "decode_ms_per_token",
     "ours q4_k gen step/llama.cpp Q4_K_M decode", "≤ 1.25", lambda r: r <= 1.25),
]

# The images16 columns: (impl, merge option's dest). Target: ours f32/HF ≥ 1 (higher is better).
IMAGES16_INPUTS = [("ours", "ours_images16"), ("ours_half", "ours_half_images16"),
                   ("ours_q8_0", "ours_q8_0_images16"), ("ours_q4_k", "ours_q4_k_images16"),
                   ("hf", "hf_images16")]

# (row key, numerator impl, numerator key, denominator impl, denominator key, target text, test)
TARGETS = [
    ("prefill_ms", "ours", "prefill_ms", "llamacpp_f32", "prefill_ms", "ours/llama.cpp ≤ 1.15",
     lambda r: r <= 1.15),
    ("decode_ms_per_token", "ours", "decode_ms_per_token", "llamacpp_f32", "decode_ms_per_token",
     "ours/llama.cpp ≤ 1.15", lambda r: r <= 1.15),
    ("gen_ms_per_step", "ours", "gen_ms_per_step", "llamacpp_f32", "decode_ms_per_token",
     "ours gen step/llama.cpp decode ≤ 1.25", lambda r: r <= 1.25),
    ("vision_ms", "ours", "vision_ms", "hf", "vision_ms", "ours/HF < 1", lambda r: r < 1),
    ("vq_decode_ms", "ours", "vq_decode_ms", "hf", "vq_decode_ms", "ours/HF < 1", lambda r: r < 1),
]


def last_json_line(path):
    """The last line of `path` that parses as a JSON object, or None."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    sys.exit(f"table.py: no JSON object line in {path}")


# --- llama-bench -------------------------------------------------------------------------

def cmd_llamacpp(args):
    if args.depth < 0:
        sys.exit("table.py: --depth must be ≥ 0")
    base = [args.bench, "-m", args.model, "-t", str(args.threads), "-r", str(args.repeats),
            "-o", "json"]
    # Two invocations: pp at depth 0 (as the workload's prompt), and tg both at --depth (the
    # cache ours decodes after: equal work) and at depth 0 (WORKLOAD.md's `llama-bench -p 640
    # -n 32`). -d prefills untimed, once per test.
    depths = "0" if args.depth == 0 else f"0,{args.depth}"
    runs = [base + ["-p", str(args.prompt), "-n", "0"] + args.extra,
            base + ["-p", "0", "-n", str(args.gen), "-d", depths] + args.extra]
    tests, stdouts, stderrs, failed = [], [], [], None
    for cmd in runs:
        print("running: " + " ".join(cmd), file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdouts.append(proc.stdout)
        stderrs.append(f"== running: {' '.join(cmd)}\n{proc.stderr}")
        if proc.returncode != 0:
            failed = proc
            break
        try:
            parsed = json.loads(proc.stdout)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list):
            failed = proc
            break
        tests += parsed
    if args.raw_out:
        # One JSON array with both invocations' tests (what merge reads); after a failure, the
        # stdouts as they came, for reading.
        with open(args.raw_out, "w") as f:
            f.write(json.dumps(tests, indent=2) + "\n" if failed is None else "\n".join(stdouts))
        with open(args.raw_out + ".stderr", "w") as f:
            f.write("".join(stderrs))
    if failed is not None:
        sys.stderr.write(failed.stderr[-4000:])
        if failed.returncode != 0:
            sys.exit(f"table.py: llama-bench failed with exit code {failed.returncode}")
        sys.exit("table.py: llama-bench did not print a JSON array (see the raw output)")
    # Max RSS over the waited-for children: the larger of the two invocations.
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    def tokens_per_s(test):
        samples = test.get("samples_ts") or [test["avg_ts"]]
        return statistics.median(samples)

    def find(n_prompt, n_gen, depth, name):
        # Older llama-bench builds have no n_depth: depth 0.
        found = [t for t in tests if t.get("n_prompt") == n_prompt and t.get("n_gen") == n_gen
                 and t.get("n_depth", 0) == depth]
        if not found:
            sys.exit(f"table.py: llama-bench output lacks {name} "
                     f"(n_prompt {n_prompt}, n_gen {n_gen}, n_depth {depth}); see the raw output")
        return found[0]

    pp = find(args.prompt, 0, 0, f"pp{args.prompt}")
    tg = find(0, args.gen, args.depth, f"tg{args.gen} @ d{args.depth}")
    tg0 = find(0, args.gen, 0, f"tg{args.gen} @ d0")
    pp_ts, tg_ts, tg0_ts = tokens_per_s(pp), tokens_per_s(tg), tokens_per_s(tg0)
    prefill_ms = args.prompt / pp_ts * 1e3
    decode_ms = 1e3 / tg_ts
    decode_d0_ms = 1e3 / tg0_ts
    print(f"llama.cpp {args.dtype}: pp{args.prompt} {pp_ts:.2f} t/s -> prefill_ms {prefill_ms:.1f}; "
          f"tg{args.gen} @ d{args.depth} {tg_ts:.2f} t/s -> decode_ms_per_token {decode_ms:.1f}; "
          f"tg{args.gen} @ d0 {tg0_ts:.2f} t/s -> decode_ms_per_token_d0 {decode_d0_ms:.1f} "
          f"(median of {len(tg.get('samples_ts') or [0])} run(s); flash_attn {tg.get('flash_attn')}, "
          f"KV {tg.get('type_k')}, n_ubatch {pp.get('n_ubatch')})")
    line = {
        "impl": "llama.cpp",
        "dtype": args.dtype,
        "threads": tg.get("n_threads", args.threads),
        "vision_ms": None,
        "prefill_ms": round(prefill_ms, 3),
        "decode_ms_per_token": round(decode_ms, 3),
        "gen_ms_per_step": None,
        "vq_decode_ms": None,
        "image_s_estimate": None,
        "peak_rss_mb": round(rss_kib / 1024.0, 1),
        "decode_ms_per_token_d0": round(decode_d0_ms, 3),
        "decode_depth": args.depth,
    }
    print(json.dumps(line, separators=(",", ":")), flush=True)


# --- merge + table -----------------------------------------------------------------------

def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "s":
        return f"{v:.1f}"
    if unit == "MiB":
        return f"{v:.0f}"
    if unit == "images/min":
        return f"{v:.2f}"
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def fmt_range(values, unit):
    """` (lo–hi)` over the rounds' values, compact (ms ≥ 100 without decimals); '' for < 2."""
    if len(values) < 2:
        return ""

    def short(v):
        if unit == "s":
            return f"{v:.1f}"
        if unit == "images/min":
            return f"{v:.2f}"
        return f"{v:.0f}" if unit == "MiB" or v >= 100 else f"{v:.1f}"
    return f" ({short(min(values))}–{short(max(values))})"


def merge_rounds(objs):
    """One implementation's result from its rounds' JSON objects: a single object as it is;
    several: the first one's fields, each key of KEYS and EXTRA_KEYS replaced by the median over
    the rounds (`peak_rss_mb` by the maximum), and every round's object under "rounds"."""
    if not objs:
        return None
    if len(objs) == 1:
        return objs[0]
    out = dict(objs[0])
    for key in [k for k, _ in KEYS] + EXTRA_KEYS:
        vals = [o[key] for o in objs if o.get(key) is not None]
        if key in EXTRA_KEYS and key not in out and not vals:
            continue  # older files: leave the key out
        if not vals:
            out[key] = None
        elif key == "peak_rss_mb":
            out[key] = max(vals)
        else:
            out[key] = round(statistics.median(vals), 3)
    out["rounds"] = objs
    return out


def round_values(r, key):
    """Every round's value of `key` (empty for a single measurement)."""
    if not r or not r.get("rounds"):
        return []
    return [o[key] for o in r["rounds"] if o.get(key) is not None]


def build_table(res, meta):
    cols = [("ours", "ours (janus-rs f32)")]
    if res.get("ours_half"):
        cols.append(("ours_half", f"ours {res['ours_half'].get('dtype', 'half')}"))
    cols += [("hf", "HF transformers (f32)"), ("llamacpp_f32", "llama.cpp f32"),
             ("llamacpp_f16", "llama.cpp F16")]
    # The quantised columns (all four) when any of them was measured.
    quant = any(res.get(impl) for impl, _ in QUANT_COLS)
    if quant:
        cols += QUANT_COLS
    head = ["key"] + [c[1] for c in cols] + ["ours/HF", "target ratio"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * len(head)) + "|"]

    def get(impl, key):
        r = res.get(impl)
        return None if not r else r.get(key)

    # images_per_minute_16 after image_s_estimate, when some column has it.
    images16 = any(get(impl, IMAGES_KEY[0]) is not None for impl, _ in cols)
    keys = list(KEYS)
    if images16:
        keys.insert([k for k, _ in keys].index("image_s_estimate") + 1, IMAGES_KEY)

    for key, unit in keys:
        row = [f"`{key}` ({unit})"] + [fmt(get(impl, key), unit) +
                                       fmt_range(round_values(res.get(impl), key), unit)
                                       for impl, _ in cols]
        o, h = get("ours", key), get("hf", key)
        row.append(f"{o / h:.2f}" if o and h else "–")
        target = "–"
        for k, ni, nk, di, dk, text, test in TARGETS:
            if k != key:
                continue
            n, d = get(ni, nk), get(di, dk)
            if n and d:
                r = n / d
                target = f"**{r:.2f}** ({text}) {'✅' if test(r) else '❌'}"
            else:
                target = f"– ({text})"
        if key == "decode_ms_per_token" and get("ours_half", key) and get("llamacpp_f16", key):
            r = get("ours_half", key) / get("llamacpp_f16", key)
            dtype = res["ours_half"].get("dtype", "half")
            target += (f"; ours {dtype}/llama.cpp F16 = **{r:.2f}** (≤ 1.15) "
                       f"{'✅' if r <= 1.15 else '❌'}")
        if quant:
            for k, ni, nk, di, dk, label, text, test in QUANT_TARGETS:
                if k != key:
                    continue
                n, d = get(ni, nk), get(di, dk)
                if n and d:
                    target += f"; {label} = **{n / d:.2f}** ({text}) {'✅' if test(n / d) else '❌'}"
                else:
                    target += f"; {label} – ({text})"
        if key == IMAGES_KEY[0]:
            target = images16_target(res, get)
        row.append(target)
        out.append("| " + " | ".join(row) + " |")

    counts = {impl: len((res.get(impl) or {}).get("rounds") or [0]) for impl, _ in cols
              if res.get(impl)}
    n = max(counts.values(), default=1)
    if n > 1:
        fewer = "".join(f" {label}: {'measured once' if c == 1 else f'{c} rounds'}."
                        for impl, label in cols if (c := counts.get(impl, n)) < n)
        out.append("")
        out.append(f"Each cell: median of {n} alternated rounds (min–max over the rounds in "
                   "parentheses; `peak_rss_mb`: the maximum); ratios from the medians." + fewer)

    if images16:
        def smoke(impl):  # hf_bench.py --images16-steps N < 576: not the workload
            n = ((res.get(impl) or {}).get("images16") or {}).get("images16_tokens")
            return f" (SMOKE RUN: {n} tokens per image)" if n else ""
        secs = "; ".join(f"{label} {get(impl, 'images16_s'):.1f} s{smoke(impl)}" for impl, label in cols
                         if get(impl, "images16_s") is not None)
        out.append("")
        out.append("`images_per_minute_16`: 16 images drawn in one call (one prompt 16 times, CFG 5: "
                   "32 rows a step, 576 image tokens, temperature 1) plus the VQ decode of the 16 to "
                   "384x384, timed once after a short warm-up, outside the rounds; = 16 × 60 / "
                   "`images16_s` (higher is better; its ours/HF is ours' images/min over HF's). "
                   "`images16_s`: " + (secs or "–") + ".")

    depth_line = llamacpp_depth_line(res, get)
    if depth_line:
        out.append("")
        out.append(depth_line)

    # Paired ratios: both sides of a target measured in the same round (minutes apart, so
    # closer in time than the medians of separate columns).
    paired = []
    checks = [(k, ni, nk, di, dk, text) for k, ni, nk, di, dk, text, _ in TARGETS]
    checks.append(("decode_ms_per_token", "ours_half", "decode_ms_per_token", "llamacpp_f16",
                   "decode_ms_per_token", "≤ 1.15 vs F16"))
    if quant:
        checks += [(k, ni, nk, di, dk, f"{label} {text}")
                   for k, ni, nk, di, dk, label, text, _ in QUANT_TARGETS]
    for k, ni, nk, di, dk, text in checks:
        num, den = round_values(res.get(ni), nk), round_values(res.get(di), dk)
        if len(num) > 1 and len(num) == len(den):
            ratios = [a / b for a, b in zip(num, den)]
            label = k if ni == "ours" else f"{k} ({res[ni].get('dtype', 'half')})"
            paired.append(f"{label} {' / '.join(f'{r:.2f}' for r in ratios)} → median "
                          f"**{statistics.median(ratios):.2f}** ({text})")
    if paired:
        out.append("")
        out.append("Per-round ratios (numerator and denominator from the same round): " +
                   "; ".join(paired) + ".")

    # Bandwidth floor: GB of weights a decode step reads / decode time.
    bw = []
    for impl, label in cols:
        r = res.get(impl)
        if r and r.get("decode_ms_per_token"):
            dtype = r.get("dtype", "f32")
            gb = DECODE_GB.get(dtype, QUANT_GB.get(dtype, 5.8))
            bw.append(f"{label} {gb / (r['decode_ms_per_token'] / 1e3):.1f} GB/s")
    out.append("")
    if quant:
        out.append("Bandwidth floor (a decode step reads every weight once: ≈ 5.8 GB in f32, 2.9 GB "
                   f"in 16-bit, {QUANT_GB['q8_0']:.2f} GB in Q8_0 (34 bytes per 32 weights); "
                   f"≈ {QUANT_GB['q4_k']:.2f} GB for ours q4_k (Q4_K, 144 bytes per 256 weights, with "
                   "lm_head and layers 0 and 23's v_proj/down_proj in Q8_0) and ≈ "
                   f"{QUANT_GB['q4_k_m']:.2f} GB for llama.cpp Q4_K_M (Q4_K with output and 12 "
                   "layers' attn_v/ffn_down in Q6_K, 210 bytes per 256): approximate, the two Q4 "
                   "mixes differ; GB/s implied by each decode time): " +
                   ("; ".join(bw) if bw else "–") + ".")
    else:
        out.append("Bandwidth floor (a decode step reads every weight once: ≈ 5.8 GB in f32, 2.9 GB in "
                   "16-bit; GB/s implied by each decode time): " + ("; ".join(bw) if bw else "–") + ".")
    if meta:
        out.append("")
        bits = []
        for k in ("date", "host", "cpu", "threads", "repeats", "hf_repeats", "rounds", "git"):
            if meta.get(k) is not None:
                bits.append(f"{k}: {meta[k]}")
        if bits:
            out.append("Run: " + "; ".join(bits) + ".")
        loads = meta.get("load") or {}
        if loads:
            out.append("Load average (1/5/15 min) around each measurement: " +
                       "; ".join(f"{k} {v}" for k, v in loads.items()) + ".")
    return "\n".join(out)


def images16_target(res, get):
    """The target cell of the images_per_minute_16 row: ours f32/HF ≥ 1 (higher is better), then
    every other tier of ours over HF."""
    text = "ours/HF ≥ 1"
    o, h = get("ours", IMAGES_KEY[0]), get("hf", IMAGES_KEY[0])
    if o and h:
        cell = f"**{o / h:.2f}** ({text}) {'✅' if o / h >= 1 else '❌'}"
    else:
        cell = f"– ({text})"
    if h:
        for impl in ("ours_half", "ours_q8_0", "ours_q4_k"):
            v = get(impl, IMAGES_KEY[0])
            if v:
                cell += f"; ours {res[impl].get('dtype', impl)}/HF = **{v / h:.2f}**"
    return cell


def llamacpp_depth_line(res, get):
    """llama.cpp's decode depth and its depth-0 figures with ours' ratios to them; None for
    results without them (files from before the depth run)."""
    pairs = [(impl, label, num) for impl, label, num in
             (("llamacpp_f32", "llama.cpp f32", "ours"), ("llamacpp_f16", "llama.cpp F16", "ours_half"),
              ("llamacpp_q8_0", "llama.cpp Q8_0", "ours_q8_0"),
              ("llamacpp_q4_k_m", "llama.cpp Q4_K_M", "ours_q4_k"))
             if get(impl, "decode_ms_per_token_d0") is not None]
    if not pairs:
        return None
    depths = []
    for impl, _, _ in pairs:
        r = res[impl]
        for o in r.get("rounds") or [r]:
            d = o.get("decode_depth", 0)  # files from before the depth run decoded at depth 0
            if d not in depths:
                depths.append(d)
    depth = "/".join(str(d) for d in sorted(depths)) or "?"
    several = any(len(round_values(res.get(impl), "decode_ms_per_token_d0")) > 1
                  for impl, _, _ in pairs)
    bits = []
    for impl, label, num in pairs:
        d0 = get(impl, "decode_ms_per_token_d0")
        text = (f"{label} {fmt(d0, 'ms')}"
                f"{fmt_range(round_values(res.get(impl), 'decode_ms_per_token_d0'), 'ms')} ms/token")
        o = get(num, "decode_ms_per_token")
        if o:
            name = "ours" if num == "ours" else f"ours {res[num].get('dtype', 'half')}"
            text += f", {name}/{label} depth 0 = **{o / d0:.2f}**"
        bits.append(text)
    if depths == [0]:
        head = ("llama.cpp's `decode_ms_per_token` is measured at depth 0 (an empty cache; ours "
                "decodes after the 640-position prompt, so it does more work).")
    else:
        # Equal work: ours decodes after the 640-position prompt.
        head = (f"llama.cpp's `decode_ms_per_token` (in the decode and gen target ratios) is "
                f"measured at depth {depth}: each token decoded after {depth} cached positions "
                f"(`llama-bench -d {depth}`), as ours after the 640-position prompt.")
    return (head + " From an empty cache (depth 0, the figure of WORKLOAD.md's `llama-bench -p 640 "
            "-n 32`" + ("; median (min–max) over the rounds" if several else "") + "): " +
            "; ".join(bits) + ".")


def existing(paths):
    """The files of `paths` (an option's values, or None) that exist; a skipped implementation's
    files do not. Warns when only some of several exist (an unfinished round)."""
    paths = paths or []
    found = [p for p in paths if os.path.exists(p)]
    if found and len(found) < len(paths):
        print("table.py: missing, left out: " + ", ".join(p for p in paths if p not in found),
              file=sys.stderr)
    return found


def cmd_merge(args):
    res = {name: merge_rounds([last_json_line(p) for p in existing(getattr(args, name))])
           for name in ("ours", "ours_half", "hf", "llamacpp_f32", "llamacpp_f16")}
    # The quantised columns: in the results only when measured (older results files unchanged).
    for name, _ in QUANT_COLS:
        r = merge_rounds([last_json_line(p) for p in existing(getattr(args, name))])
        if r:
            res[name] = r
    # images16 outputs (measured once): their keys into the column's result, the whole object
    # under "images16"; a column with nothing else is the images16 object itself.
    for name, dest in IMAGES16_INPUTS:
        objs = [last_json_line(p) for p in existing(getattr(args, dest))]
        if not objs:
            continue
        obj = objs[-1]
        if res.get(name) is None:
            res[name] = dict(obj)
        for key in ("images_per_minute_16", "images16_s"):
            res[name][key] = obj.get(key)
        res[name]["images16"] = obj
    meta = {}
    if args.meta and os.path.exists(args.meta):
        with open(args.meta) as f:
            meta = json.load(f)
    raw = {}
    # One round: llama-bench's JSON array as it is; several: a list of them, one per round.
    for name, paths in (("llamacpp_f32", args.llamacpp_f32_raw), ("llamacpp_f16", args.llamacpp_f16_raw),
                        ("llamacpp_q8_0", args.llamacpp_q8_0_raw),
                        ("llamacpp_q4_k_m", args.llamacpp_q4_k_m_raw)):
        arrays = []
        for path in existing(paths):
            with open(path) as f:
                try:
                    arrays.append(json.load(f))
                except ValueError:
                    pass
        if arrays:
            raw[name] = arrays[0] if len(paths) == 1 else arrays
    table = build_table(res, meta)
    if args.results_out:
        with open(args.results_out, "w") as f:
            json.dump({"meta": meta, "results": res, "llama_bench_raw": raw, "table_markdown": table},
                      f, indent=2, ensure_ascii=False)
            f.write("\n")
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(table + "\n")
    print(table)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("llamacpp", help="run llama-bench and print a WORKLOAD JSON line")
    p.add_argument("--bench", required=True, help="path of the llama-bench binary")
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prompt", type=int, default=640)
    p.add_argument("--gen", type=int, default=32)
    p.add_argument("--depth", type=int, default=640,
                   help="cached positions before the timed decode (default 640: the workload's "
                        "prompt, which ours decodes after); the depth-0 decode is measured too")
    p.add_argument("--raw-out")
    p.add_argument("extra", nargs="*", help="more llama-bench arguments (after --)")
    p.set_defaults(fn=cmd_llamacpp)

    m = sub.add_parser("merge", help="merge JSON lines into a results file and print the table")
    for name in ("ours", "ours-half", "hf", "llamacpp-f32", "llamacpp-f16", "llamacpp-f32-raw",
                 "llamacpp-f16-raw", "ours-q8_0", "llamacpp-q8_0", "ours-q4_k", "llamacpp-q4_k_m",
                 "llamacpp-q8_0-raw", "llamacpp-q4_k_m-raw"):
        m.add_argument("--" + name, action="append", metavar="FILE",
                       help="repeat once per round; the median over the rounds is used")
    for name in ("ours", "ours-half", "ours-q8_0", "ours-q4_k", "hf"):
        m.add_argument(f"--{name}-images16", action="append", metavar="FILE",
                       help="that column's --only images16 output (measured once; the last given "
                            "file counts)")
    for name in ("meta", "results-out", "markdown-out"):
        m.add_argument("--" + name)
    m.set_defaults(fn=cmd_merge)

    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
