#!/usr/bin/env python3
"""Side-by-side helpers: run llama-bench as a WORKLOAD line, merge results, print the table.

    # run llama-bench, keep its raw JSON, print one WORKLOAD JSON line (last line of stdout)
    python table.py llamacpp --bench BIN --model M.gguf --dtype f32 --threads 2 --repeats 3 \
        --raw-out raw.json

    # merge the JSON lines of every implementation into one results file and print the table
    python table.py merge --ours ours.json [--ours-half h.json] [--hf hf.json] \
        [--llamacpp-f32 l32.json] [--llamacpp-f16 l16.json] [--meta meta.json] \
        --results-out results.json [--markdown-out table.md]

Each input file holds the implementation's stdout; the WORKLOAD JSON object is its last
non-empty line that parses as JSON. Missing inputs (a skipped implementation) become `–`.
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

# Weight bytes a decode step must read (WORKLOAD.md): 24 layers + lm_head.
DECODE_GB = {"f32": 5.8, "bf16": 2.9, "f16": 2.9}

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
    cmd = [args.bench, "-m", args.model, "-p", str(args.prompt), "-n", str(args.gen),
           "-t", str(args.threads), "-r", str(args.repeats), "-o", "json"] + args.extra
    print("running: " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if args.raw_out:
        with open(args.raw_out, "w") as f:
            f.write(proc.stdout)
        with open(args.raw_out + ".stderr", "w") as f:
            f.write(proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit(f"table.py: llama-bench failed with exit code {proc.returncode}")
    try:
        tests = json.loads(proc.stdout)
    except ValueError:
        sys.exit("table.py: llama-bench did not print a JSON array (see the raw output)")
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    def tokens_per_s(test):
        samples = test.get("samples_ts") or [test["avg_ts"]]
        return statistics.median(samples)

    pp = [t for t in tests if t.get("n_prompt") == args.prompt and t.get("n_gen") == 0]
    tg = [t for t in tests if t.get("n_gen") == args.gen and t.get("n_prompt") == 0]
    if not pp or not tg:
        sys.exit(f"table.py: llama-bench output lacks pp{args.prompt} or tg{args.gen}")
    pp_ts, tg_ts = tokens_per_s(pp[0]), tokens_per_s(tg[0])
    prefill_ms = args.prompt / pp_ts * 1e3
    decode_ms = 1e3 / tg_ts
    print(f"llama.cpp {args.dtype}: pp{args.prompt} {pp_ts:.2f} t/s -> prefill_ms {prefill_ms:.1f}; "
          f"tg{args.gen} {tg_ts:.2f} t/s -> decode_ms_per_token {decode_ms:.1f} "
          f"(median of {len(tg[0].get('samples_ts') or [0])} run(s); flash_attn {tg[0].get('flash_attn')}, "
          f"KV {tg[0].get('type_k')}, n_ubatch {pp[0].get('n_ubatch')})")
    line = {
        "impl": "llama.cpp",
        "dtype": args.dtype,
        "threads": tg[0].get("n_threads", args.threads),
        "vision_ms": None,
        "prefill_ms": round(prefill_ms, 3),
        "decode_ms_per_token": round(decode_ms, 3),
        "gen_ms_per_step": None,
        "vq_decode_ms": None,
        "image_s_estimate": None,
        "peak_rss_mb": round(rss_kib / 1024.0, 1),
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
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def build_table(res, meta):
    cols = [("ours", "ours (janus-rs f32)")]
    if res.get("ours_half"):
        cols.append(("ours_half", f"ours {res['ours_half'].get('dtype', 'half')}"))
    cols += [("hf", "HF transformers (f32)"), ("llamacpp_f32", "llama.cpp f32"),
             ("llamacpp_f16", "llama.cpp F16")]
    head = ["key"] + [c[1] for c in cols] + ["ours/HF", "target ratio"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * len(head)) + "|"]

    def get(impl, key):
        r = res.get(impl)
        return None if not r else r.get(key)

    for key, unit in KEYS:
        row = [f"`{key}` ({unit})"] + [fmt(get(impl, key), unit) for impl, _ in cols]
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
        row.append(target)
        out.append("| " + " | ".join(row) + " |")

    # Bandwidth floor: GB of weights a decode step reads / decode time.
    bw = []
    for impl, label in cols:
        r = res.get(impl)
        if r and r.get("decode_ms_per_token"):
            gb = DECODE_GB.get(r.get("dtype", "f32"), 5.8)
            bw.append(f"{label} {gb / (r['decode_ms_per_token'] / 1e3):.1f} GB/s")
    out.append("")
    out.append("Bandwidth floor (a decode step reads every weight once: ≈ 5.8 GB in f32, 2.9 GB in "
               "16-bit; GB/s implied by each decode time): " + ("; ".join(bw) if bw else "–") + ".")
    if meta:
        out.append("")
        bits = []
        for k in ("date", "host", "cpu", "threads", "repeats", "hf_repeats", "git"):
            if meta.get(k) is not None:
                bits.append(f"{k}: {meta[k]}")
        if bits:
            out.append("Run: " + "; ".join(bits) + ".")
        loads = meta.get("load") or {}
        if loads:
            out.append("Load average (1/5/15 min) around each measurement: " +
                       "; ".join(f"{k} {v}" for k, v in loads.items()) + ".")
    return "\n".join(out)


def cmd_merge(args):
    res = {
        "ours": last_json_line(args.ours),
        "ours_half": last_json_line(args.ours_half),
        "hf": last_json_line(args.hf),
        "llamacpp_f32": last_json_line(args.llamacpp_f32),
        "llamacpp_f16": last_json_line(args.llamacpp_f16),
    }
    meta = {}
    if args.meta and os.path.exists(args.meta):
        with open(args.meta) as f:
            meta = json.load(f)
    raw = {}
    for name, path in (("llamacpp_f32", args.llamacpp_f32_raw), ("llamacpp_f16", args.llamacpp_f16_raw)):
        if path and os.path.exists(path):
            with open(path) as f:
                try:
                    raw[name] = json.load(f)
                except ValueError:
                    pass
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
    p.add_argument("--raw-out")
    p.add_argument("extra", nargs="*", help="more llama-bench arguments (after --)")
    p.set_defaults(fn=cmd_llamacpp)

    m = sub.add_parser("merge", help="merge JSON lines into a results file and print the table")
    for name in ("ours", "ours-half", "hf", "llamacpp-f32", "llamacpp-f16", "llamacpp-f32-raw",
                 "llamacpp-f16-raw", "meta", "results-out", "markdown-out"):
        m.add_argument("--" + name)
    m.set_defaults(fn=cmd_merge)

    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
