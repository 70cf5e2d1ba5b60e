#!/usr/bin/env python3
"""Write a random-weight GGUF of the Janus-Pro-1B language model for llama.cpp's llama-bench.

llama architecture, hidden 2048, 24 layers, 16 heads (head dim 128, no GQA), MLP 5632,
vocab 102400, untied output (lm_head), RMSNorm eps 1e-6, rope theta 10000: the LLM of the
standard workload (docs/workload.md). The values are random (normal, std 0.02; norm
weights 1); they do not change the work llama-bench times.

The tokenizer section is the smallest one llama.cpp accepts: `tokenizer.ggml.model = "none"`
plus `llama.vocab_size`, which makes llama.cpp create 102400 dummy tokens. llama-bench only
draws random token ids below the vocab size, so it needs nothing more.

Tensors are generated and written one at a time (the f32 file is ~6.6 GB; it is never held
in memory whole). The file is written to a temporary name and renamed at the end, so an
interrupted run leaves no half-written model behind.

    python make_gguf.py --out model-f32.gguf --dtype f32
    python make_gguf.py --out model-f16.gguf --dtype f16
"""

import argparse
import os
import sys
import time

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - reported to the user
    sys.exit("make_gguf.py: the `gguf` package is missing (pip install gguf)")

HIDDEN = 2048
LAYERS = 24
HEADS = 16
HEAD_DIM = HIDDEN // HEADS
MLP = 5632
VOCAB = 102400
CONTEXT = 16384
RMS_EPS = 1e-6
ROPE_THETA = 10000.0


def tensor_plan():
    """(name, numpy shape in PyTorch (out, in) order, is_norm) for every tensor."""
    plan = [("token_embd.weight", (VOCAB, HIDDEN), False)]
    for i in range(LAYERS):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", (HIDDEN,), True),
            (p + "attn_q.weight", (HIDDEN, HIDDEN), False),
            (p + "attn_k.weight", (HIDDEN, HIDDEN), False),
            (p + "attn_v.weight", (HIDDEN, HIDDEN), False),
            (p + "attn_output.weight", (HIDDEN, HIDDEN), False),
            (p + "ffn_norm.weight", (HIDDEN,), True),
            (p + "ffn_gate.weight", (MLP, HIDDEN), False),
            (p + "ffn_up.weight", (MLP, HIDDEN), False),
            (p + "ffn_down.weight", (HIDDEN, MLP), False),
        ]
    plan += [
        ("output_norm.weight", (HIDDEN,), True),
        ("output.weight", (VOCAB, HIDDEN), False),
    ]
    return plan


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output .gguf path")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32",
                    help="dtype of the matrices (norm weights stay f32, as llama.cpp's converter writes them)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    mat_dtype = np.float32 if args.dtype == "f32" else np.float16
    rng = np.random.default_rng(args.seed)
    plan = tensor_plan()

    tmp = args.out + ".partial"
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name(f"janus-pro-1b-llm-random-{args.dtype}")
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if args.dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(MLP)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("none")

    for name, shape, is_norm in plan:
        dt = np.float32 if is_norm else mat_dtype
        nbytes = int(np.prod(shape)) * np.dtype(dt).itemsize
        w.add_tensor_info(name, shape, np.dtype(dt), nbytes)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    start = time.time()
    total = 0
    for name, shape, is_norm in plan:
        if is_norm:
            t = np.ones(shape, dtype=np.float32)
        else:
            t = rng.standard_normal(size=shape, dtype=np.float32)
            t *= 0.02
            if mat_dtype != np.float32:
                t = t.astype(mat_dtype)
        w.write_tensor_data(t)
        total += t.nbytes
        del t
    w.close()
    os.replace(tmp, args.out)
    n_params = sum(int(np.prod(s)) for _, s, _ in plan)
    print(f"wrote {args.out}: {n_params / 1e9:.3f} B parameters, {total / 1e9:.2f} GB of tensor data, "
          f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
