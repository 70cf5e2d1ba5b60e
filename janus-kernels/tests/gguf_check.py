#!/usr/bin/env python3
"""Compares janus-kernels' Q8_0 and Q4_K blocks with the `gguf` package (pip install gguf).

The `gguf` package has GGML's Q8_0 quantiser (bit-exact with `quantize_row_q8_0_ref`) and the
Q4_K dequantiser, so this checks that our Q8_0 bytes equal gguf's and that gguf reads our Q4_K
bytes back to exactly our dequantisation (layout, scale packing, nibble order). With
`--ref PREFIX` it also compares against files written by a build of GGML's C quantisers
(PREFIX.q8_0, PREFIX.q4_k, PREFIX.q4_k.deq).

    target/release/examples/quant_dump /tmp/quant-check
    python3 janus-kernels/tests/gguf_check.py /tmp/quant-check
"""

import argparse
import pathlib
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--ref", help="prefix of files written by GGML's C reference quantisers")
    args = ap.parse_args()
    d = args.dir
    rows, cols = map(int, (d / "shape.txt").read_text().split())
    x = np.fromfile(d / "input.f32", dtype="<f4").reshape(rows, cols)
    ours = {k: np.fromfile(d / f"ours.{k}", dtype=np.uint8).reshape(rows, -1) for k in ("q8_0", "q4_k")}
    deq = {k: np.fromfile(d / f"ours.{k}.deq", dtype="<f4").reshape(rows, cols) for k in ("q8_0", "q4_k")}
    failures = 0

    def report(name: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")

    theirs = quants.quantize(x, T.Q8_0)
    diff = np.flatnonzero(theirs.reshape(-1) != ours["q8_0"].reshape(-1))
    report("Q8_0 bytes == gguf.quants.quantize", diff.size == 0, f"{diff.size} bytes differ" if diff.size else f"{theirs.size} bytes")
    for k, t in (("q8_0", T.Q8_0), ("q4_k", T.Q4_K)):
        back = quants.dequantize(ours[k], t)
        same = np.array_equal(back.view(np.uint32), deq[k].view(np.uint32))
        report(f"{k} gguf dequantisation == ours (bitwise)", same)
    err = np.abs(deq["q4_k"] - x).max(axis=1) / np.maximum(np.abs(x).max(axis=1), 1e-30)
    print(f"     q4_k worst per-row max error / row amax: {err.max():.3f}")

    if args.ref:
        for k in ("q8_0", "q4_k"):
            ref = np.fromfile(f"{args.ref}.{k}", dtype=np.uint8).reshape(rows, -1)
            bad = np.flatnonzero((ref != ours[k]).any(axis=1))
            report(f"{k} bytes == GGML C reference", bad.size == 0, f"rows differing: {bad.tolist()}" if bad.size else f"{ref.size} bytes")
        ref_deq = np.fromfile(f"{args.ref}.q4_k.deq", dtype="<f4").reshape(rows, cols)
        report("q4_k GGML C dequantisation == ours (bitwise)", np.array_equal(ref_deq.view(np.uint32), deq["q4_k"].view(np.uint32)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
