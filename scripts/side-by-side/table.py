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

Each input file holds the implementation's stdout; the WORKLOAD JSON object is its last
non-empty line that parses as JSON. Missing inputs (a skipped implementation) become `–`.
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
# from an empty cache, for WORKLOAD.md's `llama-bench -p 640 -n 32`.
EXTRA_KEYS = ["decode_ms_per_token_d0"]

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
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def fmt_range(values, unit):
    """` (lo–hi)` over the rounds' values, compact (ms ≥ 100 without decimals); '' for < 2."""
    if len(values) < 2:
        return ""

    def short(v):
        if unit == "s":
            return f"{v:.1f}"
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
    head = ["key"] + [c[1] for c in cols] + ["ours/HF", "target ratio"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * len(head)) + "|"]

    def get(impl, key):
        r = res.get(impl)
        return None if not r else r.get(key)

    for key, unit in KEYS:
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
            gb = DECODE_GB.get(r.get("dtype", "f32"), 5.8)
            bw.append(f"{label} {gb / (r['decode_ms_per_token'] / 1e3):.1f} GB/s")
    out.append("")
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


def llamacpp_depth_line(res, get):
    """llama.cpp's decode depth and its depth-0 figures with ours' ratios to them; None for
    results without them (files from before the depth run)."""
    pairs = [(impl, label, num) for impl, label, num in
             (("llamacpp_f32", "llama.cpp f32", "ours"), ("llamacpp_f16", "llama.cpp F16", "ours_half"))
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
    meta = {}
    if args.meta and os.path.exists(args.meta):
        with open(args.meta) as f:
            meta = json.load(f)
    raw = {}
    # One round: llama-bench's JSON array as it is; several: a list of them, one per round.
    for name, paths in (("llamacpp_f32", args.llamacpp_f32_raw), ("llamacpp_f16", args.llamacpp_f16_raw)):
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
                 "llamacpp-f16-raw"):
        m.add_argument("--" + name, action="append", metavar="FILE",
                       help="repeat once per round; the median over the rounds is used")
    for name in ("meta", "results-out", "markdown-out"):
        m.add_argument("--" + name)
    m.set_defaults(fn=cmd_merge)

    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
