#!/usr/bin/env python3
"""The standard inference workload (docs/workload.md) on HF transformers' Janus.

Builds `JanusForConditionalGeneration` at the Janus-Pro-1B shape with random weights from a
config (no download) and times each WORKLOAD key through the model's own submodules, the way
transformers' Janus code runs them:

- vision_ms: `model.model.get_image_features` (SigLIP `vision_model` + `aligner`) on one
  3x384x384 image -> [1, 576, 2048].
- prefill_ms: `model.model.language_model` (the LlamaModel: 24 layers) on a [1, 640, 2048]
  embedding sequence with a fresh `DynamicCache`, then `model.lm_head` on the last position
  and argmax.
- decode_ms_per_token: after that prefill, 32 greedy steps: the token through the LlamaModel
  (`embed_tokens`, 24 layers, the cache), `lm_head`, argmax read on the host; mean per step.
- gen_ms_per_step: 2 rows (conditional, unconditional) of a 32-token prompt prefilled into a
  `DynamicCache`, then 32 steps of `generation_head` -> transformers'
  `ClassifierFreeGuidanceLogitsProcessor` (scale 5) -> softmax + multinomial ->
  `prepare_embeddings_for_image_generation` (`generation_embeddings` + `generation_aligner`)
  -> the 24 layers with the cache; mean per step (the prompt prefill and first draw are not
  counted, as in janus-rs' bench). This is the loop of `JanusForConditionalGeneration.generate
  (generation_mode="image")`, unrolled so each step can be timed.
- vq_decode_ms: `model.decode_image_tokens` (codebook lookup, `post_quant_conv`, VQ decoder)
  on 576 codes -> one 384x384x3 image.
- images_per_minute_16 (stage `images16`, only with `--only images16`, never by default):
  16 images drawn in one `JanusForConditionalGeneration.generate(generation_mode="image")` call
  (the HF Janus model's own image-generation entry point: 16 copies of the gen stage's 32-token
  prompt -> 32 CFG rows a step, its static cache, the CFG logits processor at scale 5,
  temperature 1 sampling from the whole distribution, 576 image tokens each), then
  `model.decode_image_tokens` on the 16 x 576 codes -> 16 images of 384x384x3; timed once after
  a 2-token warm-up call. images_per_minute_16 = 16 * 60 / images16_s (the seconds of the
  timed call plus the decode, prompt prefill included), as janus-rs' bench `--only images16`.
  `--images16-steps N` draws N tokens per image instead of 576 (a smoke run: the codes are
  repeated up to 576 for the decode; not the workload, reported as "images16_tokens": N).
- peak_rss_mb: VmHWM of this process.

float32 on the CPU by default (`--device cuda` and `--dtype bf16|f16` for a GPU run: each timed
stage then ends in `torch.cuda.synchronize()`, and `peak_gpu_mb` is torch's peak allocation),
`torch.set_num_threads(threads)`, everything under `torch.inference_mode()`. Each
figure is the median of `--repeats` runs after one warm-up run. The language model's cache
keyword (`cache` in recent transformers, `past_key_values` before) is read off its signature. Readable lines first, one
JSON object (the same keys as janus-rs' `perf/src/bin/bench.rs`) on the last line of stdout.
"""

import argparse
import copy
import json
import inspect
import os
import statistics
import sys
import time

DECODE_STEPS = 32
PREFILL_LEN = 640
GEN_PROMPT_LEN = 32
GEN_STEPS = 32
CFG_WEIGHT = 5.0
IMAGES_PER_CALL = 16
IMAGE_TOKENS = 576
# `images16` runs only when named in --only (minutes, and ~17 GB at f32: 32 rows of KV cache).
DEFAULT_STAGES = ("vision", "text", "gen", "vq")
STAGES = DEFAULT_STAGES + ("images16",)
DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def build_config():
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    text = LlamaConfig(
        vocab_size=102400,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=16,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=16384,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
    )
    vision = JanusVisionConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=384,
        patch_size=16,
        mlp_ratio=4.0,  # MLP 4096
        projection_dim=2048,  # aligner 1024 -> 2048 -> 2048
        depth=2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=16384,
        latent_channels=256,
        base_channels=128,
        channel_multiplier=[1, 1, 2, 2, 4],
        num_res_blocks=2,
        projection_dim=2048,  # gen_aligner 8 -> 2048 -> 2048, gen_head 2048 -> 2048 -> 16384
        num_hidden_layers=2,
        image_token_embed_dim=2048,
    )
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, tie_word_embeddings=False)


def check_shape(model):
    """Fail loudly if the built model is not the workload's shape."""
    m = model.model
    lm = m.language_model
    checks = {
        "embed_tokens": (tuple(lm.embed_tokens.weight.shape), (102400, 2048)),
        "lm_head": (tuple(model.lm_head.weight.shape), (102400, 2048)),
        "layers": (len(lm.layers), 24),
        "q_proj": (tuple(lm.layers[0].self_attn.q_proj.weight.shape), (2048, 2048)),
        "mlp gate": (tuple(lm.layers[0].mlp.gate_proj.weight.shape), (5632, 2048)),
        "siglip layers": (len(m.vision_model.encoder.layers), 24),
        "siglip fc1": (tuple(m.vision_model.encoder.layers[0].mlp.fc1.weight.shape), (4096, 1024)),
        "aligner fc1": (tuple(m.aligner.fc1.weight.shape), (2048, 1024)),
        "aligner depth": (len(m.aligner.hidden_layers), 1),
        "gen_embed": (tuple(m.generation_embeddings.weight.shape), (16384, 8)),
        "gen_aligner fc1": (tuple(m.generation_aligner.fc1.weight.shape), (2048, 8)),
        "gen_head proj": (tuple(m.generation_head.proj_out.weight.shape), (2048, 2048)),
        "gen_head out": (tuple(m.generation_head.vision_head.weight.shape), (16384, 2048)),
        "vq codebook": (tuple(m.vqmodel.quantize.embedding.weight.shape), (16384, 8)),
        "vq conv_in": (tuple(m.vqmodel.decoder.conv_in.weight.shape), (512, 256, 3, 3)),
    }
    bad = {k: v for k, v in checks.items() if v[0] != v[1]}
    if bad:
        sys.exit(f"hf_bench.py: the model is not the workload shape: {bad}")
    if model.lm_head.weight.data_ptr() == lm.embed_tokens.weight.data_ptr():
        sys.exit("hf_bench.py: lm_head is tied to embed_tokens; the workload's lm_head is untied")


def main():
    ap = argparse.ArgumentParser(description="HF transformers Janus on the standard workload (random weights)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up (median)")
    ap.add_argument("--only", default="", help="comma-separated stages: vision,text,gen,vq,images16 "
                    "(default vision,text,gen,vq; images16 only when named)")
    ap.add_argument("--images16-steps", type=int, default=IMAGE_TOKENS,
                    help=f"image tokens drawn per image in the images16 stage (default {IMAGE_TOKENS}, the "
                         "workload; fewer: a smoke run, codes repeated up to 576 for the decode)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES), help="parameter and activation dtype")
    args = ap.parse_args()
    if args.repeats < 1:
        sys.exit("hf_bench.py: --repeats must be at least 1")
    if not 1 <= args.images16_steps <= IMAGE_TOKENS:
        sys.exit(f"hf_bench.py: --images16-steps must be between 1 and {IMAGE_TOKENS}")
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in STAGES:
            sys.exit(f"hf_bench.py: unknown stage {s!r} (choose from {','.join(STAGES)})")
    runs = lambda s: s in only if only else s in DEFAULT_STAGES  # noqa: E731

    import torch
    import transformers
    from transformers import DynamicCache, GenerationConfig, JanusForConditionalGeneration
    from transformers.generation.logits_process import ClassifierFreeGuidanceLogitsProcessor

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    device = torch.device(args.device)
    dtype = getattr(torch, DTYPES[args.dtype])
    on_gpu = device.type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("hf_bench.py: --device cuda but torch sees no CUDA device")
    where = torch.cuda.get_device_name(device) if on_gpu else f"{threads} thread(s)"
    print(f"hf-transformers bench: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{DTYPES[args.dtype]}, {where}, median of {args.repeats} run(s) after 1 warm-up", flush=True)

    def sync():
        if on_gpu:
            torch.cuda.synchronize(device)

    start = time.time()
    config = build_config()
    with device:  # random init where the model lives (a GPU fills 2 B parameters in a blink)
        model = JanusForConditionalGeneration(config)
    model = model.to(dtype=dtype).eval()
    check_shape(model)
    n_params = sum(p.numel() for p in model.parameters())
    lm = model.model.language_model
    # transformers renamed the language model's cache keyword from `past_key_values` to `cache`.
    cache_kw = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    w = lm.layers[0].mlp.gate_proj.weight
    print(f"model: {n_params / 1e9:.3f} B parameters built in {time.time() - start:.1f} s "
          f"(attention: {config.text_config._attn_implementation}, weight std {w.std().item():.4f})", flush=True)

    def measure(name, fn):
        warm = fn()
        log(f"  {name}: warm-up {warm:.1f}")
        values = []
        for i in range(args.repeats):
            v = fn()
            log(f"  {name}: run {i + 1}/{args.repeats} {v:.1f}")
            values.append(v)
        return statistics.median(values)

    result = {k: None for k in ("vision_ms", "prefill_ms", "decode_ms_per_token", "gen_ms_per_step",
                                "vq_decode_ms", "image_s_estimate", "images_per_minute_16")}
    images16_s = None

    with torch.inference_mode():
        if runs("vision"):
            def vision():
                pixels = torch.empty(1, 3, 384, 384, device=device, dtype=dtype).uniform_(-1.0, 1.0)
                sync()
                t0 = time.perf_counter()
                feats = model.model.get_image_features(pixel_values=pixels).pooler_output
                sync()
                ms = (time.perf_counter() - t0) * 1e3
                assert tuple(feats.shape) == (1, 576, 2048), feats.shape
                return ms

            result["vision_ms"] = measure("vision_ms", vision)
            print(f"vision_ms            {result['vision_ms']:10.2f}  (3x384x384 image -> SigLIP + aligner)", flush=True)

        if runs("text"):
            prefills, decodes = [], []
            for i in range(args.repeats + 1):
                embeds = torch.randn(1, PREFILL_LEN, 2048, device=device, dtype=dtype)
                sync()
                t0 = time.perf_counter()
                cache = DynamicCache(config=config.text_config)
                out = lm(inputs_embeds=embeds, use_cache=True, **{cache_kw: cache})
                logits = model.lm_head(out.last_hidden_state[:, -1, :])
                token = int(logits.argmax(-1).item())
                prefill = (time.perf_counter() - t0) * 1e3
                steps = []
                for _ in range(DECODE_STEPS):
                    t0 = time.perf_counter()
                    ids = torch.tensor([[token]], dtype=torch.long, device=device)
                    out = lm(input_ids=ids, use_cache=True, **{cache_kw: cache})
                    logits = model.lm_head(out.last_hidden_state[:, -1, :])
                    token = int(logits.argmax(-1).item())
                    steps.append((time.perf_counter() - t0) * 1e3)
                assert cache.get_seq_length() == PREFILL_LEN + DECODE_STEPS, cache.get_seq_length()
                step = sum(steps) / len(steps)
                label = "warm-up" if i == 0 else f"run {i}/{args.repeats}"
                log(f"  prefill_ms: {label} {prefill:.1f}; decode_ms_per_token {step:.1f}")
                if i > 0:
                    prefills.append(prefill)
                    decodes.append(step)
                del cache, out
            result["prefill_ms"] = statistics.median(prefills)
            result["decode_ms_per_token"] = statistics.median(decodes)
            print(f"prefill_ms           {result['prefill_ms']:10.2f}  ([1,{PREFILL_LEN},2048] through the layers "
                  f"+ lm_head on the last position)", flush=True)
            print(f"decode_ms_per_token  {result['decode_ms_per_token']:10.2f}  (mean of {DECODE_STEPS} greedy steps "
                  f"after the prefill; {1e3 / result['decode_ms_per_token']:.2f} tokens/s)", flush=True)

        if runs("gen"):
            vocab = config.text_config.vocab_size
            prompt = [(1 + 37 * i) % (vocab - 1) for i in range(GEN_PROMPT_LEN)]
            pad = vocab - 1
            # Unconditional row: the prompt's first and last tokens kept, the rest padded (as
            # Janus' CFG batch and transformers' generate build it).
            uncond = [prompt[0]] + [pad] * (GEN_PROMPT_LEN - 2) + [prompt[-1]]
            cfg = ClassifierFreeGuidanceLogitsProcessor(CFG_WEIGHT)
            gen_head = model.model.generation_head
            seed = [0]

            def gen():
                seed[0] += 1
                generator = torch.Generator(device=device).manual_seed(seed[0])
                ids = torch.tensor([prompt, uncond], dtype=torch.long, device=device)
                cache = DynamicCache(config=config.text_config)
                embeds = lm.embed_tokens(ids)
                out = lm(inputs_embeds=embeds, use_cache=True, **{cache_kw: cache})

                def draw(out):
                    hidden = out.last_hidden_state[:, -1, :]
                    scores = cfg(ids[:1], gen_head(hidden))  # [1, 16384]: uncond + 5 (cond - uncond)
                    probs = torch.softmax(scores, dim=-1)
                    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)

                code = draw(out)  # prompt prefill + first draw: not timed, as in janus-rs
                sync()
                steps = []
                for _ in range(GEN_STEPS):
                    t0 = time.perf_counter()
                    inputs = model.prepare_embeddings_for_image_generation(torch.cat([code, code]).unsqueeze(-1))
                    out = lm(inputs_embeds=inputs, use_cache=True, **{cache_kw: cache})
                    code = draw(out)
                    int(code[0].item())
                    steps.append((time.perf_counter() - t0) * 1e3)
                assert cache.get_seq_length() == GEN_PROMPT_LEN + GEN_STEPS, cache.get_seq_length()
                return sum(steps) / len(steps)

            result["gen_ms_per_step"] = measure("gen_ms_per_step", gen)
            print(f"gen_ms_per_step      {result['gen_ms_per_step']:10.2f}  (2 CFG rows, {GEN_PROMPT_LEN}-position "
                  f"prompt, mean of {GEN_STEPS} steps)", flush=True)

        if runs("vq"):
            codes = torch.tensor([[(7919 * i + 13) % 16384 for i in range(576)]], dtype=torch.long, device=device)

            def vq():
                sync()
                t0 = time.perf_counter()
                image = model.decode_image_tokens(codes)
                sync()
                ms = (time.perf_counter() - t0) * 1e3
                assert tuple(image.shape) == (1, 384, 384, 3), image.shape
                return ms

            result["vq_decode_ms"] = measure("vq_decode_ms", vq)
            print(f"vq_decode_ms         {result['vq_decode_ms']:10.2f}  (576 codes -> one 3x384x384 image)", flush=True)

        if runs("images16"):
            vocab = config.text_config.vocab_size
            prompt = [(1 + 37 * i) % (vocab - 1) for i in range(GEN_PROMPT_LEN)]
            # generate() builds the unconditional rows itself: every token that is neither
            # bos_token_id nor boi_token_id becomes pad_token_id. With the prompt's first token as
            # BOS and its last as BOI they are the gen stage's (and janus-rs') unconditional rows.
            gen_config = GenerationConfig(
                do_sample=True, temperature=1.0, top_k=0, top_p=1.0, guidance_scale=CFG_WEIGHT,
                num_return_sequences=1, bos_token_id=prompt[0], pad_token_id=vocab - 1,
                generation_kwargs={"boi_token_id": prompt[-1]},
            )
            ids = torch.tensor([prompt] * IMAGES_PER_CALL, dtype=torch.long, device=device)
            mask = torch.ones_like(ids)
            # generate() draws `vision_model.config.num_image_tokens` tokens per image (576).
            vision_config = model.model.vision_model.config
            full = vision_config.num_image_tokens
            assert full == IMAGE_TOKENS, full

            def images16(tokens, decode):
                vision_config.num_image_tokens = tokens
                try:
                    sync()
                    t0 = time.perf_counter()
                    codes = model.generate(ids, attention_mask=mask, generation_config=copy.deepcopy(gen_config),
                                           generation_mode="image")
                    assert tuple(codes.shape) == (IMAGES_PER_CALL, tokens), codes.shape
                    if decode:
                        if tokens < full:  # smoke run: repeat the codes up to a whole image
                            codes = codes.repeat(1, -(-full // tokens))[:, :full]
                        images = model.decode_image_tokens(codes)
                        assert tuple(images.shape) == (IMAGES_PER_CALL, 384, 384, 3), images.shape
                    sync()
                    return time.perf_counter() - t0
                finally:
                    vision_config.num_image_tokens = full

            log(f"  images16: warm-up {images16(2, False):.1f} s (2 tokens per image, no decode)")
            images16_s = images16(args.images16_steps, True)
            result["images_per_minute_16"] = IMAGES_PER_CALL * 60.0 / images16_s
            smoke = "" if args.images16_steps == IMAGE_TOKENS else \
                f"; SMOKE RUN: {args.images16_steps} tokens per image, not the workload"
            print(f"images_per_minute_16 {result['images_per_minute_16']:10.2f}  ({IMAGES_PER_CALL} images of "
                  f"{args.images16_steps} tokens in one generate call, CFG {CFG_WEIGHT:g}, {2 * IMAGES_PER_CALL} rows "
                  f"a step, + VQ decode: {images16_s:.1f} s{smoke})", flush=True)

    if result["gen_ms_per_step"] is not None and result["vq_decode_ms"] is not None:
        result["image_s_estimate"] = (576 * result["gen_ms_per_step"] + result["vq_decode_ms"]) / 1e3
        print(f"image_s_estimate     {result['image_s_estimate']:10.2f}  ((576 x gen_ms_per_step + vq_decode_ms) / 1000)")
    rss = peak_rss_mb()
    print(f"peak_rss_mb          {rss if rss is None else round(rss, 1):>10}  (VmHWM)")

    def num(v, d):
        return None if v is None else round(v, d)

    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None
    if on_gpu:
        print(f"peak_gpu_mb          {gpu_mb:10.1f}  (torch.cuda.max_memory_allocated)")

    line = {"impl": "hf-transformers", "dtype": args.dtype, "threads": threads}
    if on_gpu:
        line["device"] = where
    for k, v in result.items():
        line[k] = num(v, 3)
    line["images16_s"] = num(images16_s, 1)
    if images16_s is not None and args.images16_steps != IMAGE_TOKENS:
        line["images16_tokens"] = args.images16_steps
    line["peak_rss_mb"] = num(rss, 1)
    if on_gpu:
        line["peak_gpu_mb"] = num(gpu_mb, 1)
    print(json.dumps(line, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
