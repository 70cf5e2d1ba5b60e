//! The model card: the `README.md` of a model directory the shapes recipe built.

use std::path::Path;

use janus_core::{GenerationConfig, JanusConfig, JanusError};

/// The CFG weight the shapes model is scored and shipped with: on seeds it never saw it drew
/// 12/12 captions right at 3 against 10/12 at the reference's 5.
pub const RECOMMENDED_CFG: f64 = 3.0;

/// The settings the recipe writes as the model directory's `generation_config.json`: answers
/// are a few words (64 tokens is ample), images at [`RECOMMENDED_CFG`].
pub fn generation_config() -> GenerationConfig {
    let mut config = GenerationConfig::default();
    config.text.max_new_tokens = 64;
    config.image.cfg_weight = RECOMMENDED_CFG;
    config
}

/// The README of the model directory `dir`, which the recipe built: its components' shapes
/// (read from `dir/config.json`), the recipe that made it and its scores (from `recipe`, the
/// `recipe.json` the `janus-shapes` binary writes; numbers it lacks read "?" or "not measured").
///
/// # Errors
/// `dir/config.json` is missing or invalid.
pub fn model_card(dir: &Path, recipe: &serde_json::Value) -> Result<String, JanusError> {
    let config = JanusConfig::from_dir(dir)?;
    let pair = |v: &serde_json::Value| match v.as_array() {
        Some(a) if a.len() == 2 => format!("{}/{}", a[0], a[1]),
        _ => "not measured".into(),
    };
    let num = |v: &serde_json::Value, digits: usize| {
        v.as_f64().map_or("?".into(), |x| format!("{x:.digits$}"))
    };
    let list = |v: &serde_json::Value| match v.as_array() {
        Some(a) => a.iter().map(pair).collect::<Vec<_>>().join(", "),
        None => "not measured".into(),
    };
    let vq = &recipe["vq"];
    let janus = &recipe["janus"];
    let scores = &recipe["scores"];
    Ok(format!(
        r#"# shapes-janus

A tiny Janus trained from scratch by janus-train on synthetic 32×32 images of one shape
(circle, square, triangle) in one colour (red, green, blue, yellow) on a light background. It
answers "What is in the image?" with "a <colour> <shape>." and draws a shape for a prompt such
as "a red circle". It is a demonstration that the whole system works, not a useful model.

| component | shape |
|---|---|
| SigLIP | 32×32 image, patch {patch} → {tokens} image tokens, width {vw}, {vl} layers, {heads} heads |
| LLM | LLaMA, hidden {d}, {layers} layers, {lheads} heads, SwiGLU {d2}, vocabulary 388 (the byte-level BPE of `tests/fixtures/tiny-janus`) |
| VQ | ch 32, ch_mult [1, 2, 2], {rb} residual block(s) per encoder level, 64 × 8 l2-normalised codebook → 8×8 codes per image |
| heads | aligner {vw}→{d}, gen_aligner 8→{d}, gen_head {d}→{d}→64 |

Weights: `model.safetensors` in {dtype} under the released checkpoints' key names.
`generation_config.json` recommends CFG 3 (the examples and the server start from it).

## Recipe

```sh
{command}
```

1. Data: {train_images} training and 96 held-out images with their captions (`janus_shapes`).
2. Random initialisation of every component.
3. VQ tokenizer ({vq_steps} steps, batch {vq_batch}, AdamW {vq_lr}, reconstruction MSE +
   codebook + 0.25 × commitment loss, dead-code restarts): {codes} of 64 codes used on held-out
   images (perplexity {perplexity}), reconstruction MSE {mse}, the judge recognises
   {judged} reconstructions.
4. Janus, one stage-III run ({steps} steps, batch 8 understanding + 8 text-to-image, AdamW
   {lr} with warm-up and cosine decay, 10% prompt dropout): everything trains except the VQ.
   Stages I and II exist to protect a pretrained LLM and SigLIP; a model trained from scratch
   has nothing to protect, so their freeze sets would only slow it down. The VQ stays frozen
   because its codes are the generation targets. Final loss {final_loss}, held-out
   understanding loss {val_loss}.

Wall time on a 2-core CPU: VQ {vq_min} min, Janus {janus_min} min, {total} min in all
(including data, export and evaluation).

## Scores

Fresh images and sampler seeds the recipe never used; one entry per seed ({seeds}).

| | per seed | all seeds |
|---|---|---|
| understanding: 48 questions, answer exactly right (greedy) | {und} | {und_total} |
| generation: 12 captions × 2, CFG 3, temperature 1, judged right | {gen} | {gen_total} |

The judge (`janus_shapes::judge`) reads the colour and the fill ratio of the
non-background pixels. The tests in `janus-shapes/tests/shapes.rs` run with seeds of their own
and require ≥ 44/48 and ≥ 22/24.
"#,
        patch = config.vision.patch_size,
        tokens = config.num_image_tokens(),
        vw = config.vision.width,
        vl = config.vision.layers,
        heads = config.vision.heads,
        d = config.language.hidden_size,
        d2 = config.language.intermediate_size,
        layers = config.language.num_hidden_layers,
        lheads = config.language.num_attention_heads,
        rb = config.gen_vision.num_res_blocks,
        dtype = recipe["dtype"].as_str().unwrap_or("f32"),
        command = recipe["command"].as_str().unwrap_or(""),
        train_images = janus["train_images"],
        vq_steps = vq["steps"],
        vq_batch = vq["batch"],
        vq_lr = vq["lr"],
        codes = vq["codes_used"],
        perplexity = num(&vq["perplexity"], 1),
        mse = num(&vq["reconstruction_mse"], 4),
        judged = pair(&vq["judge_on_reconstructions"]),
        steps = janus["steps"],
        lr = janus["lr"],
        final_loss = num(&janus["final_loss"], 3),
        val_loss = janus["final_val_loss"]
            .as_f64()
            .map_or("?".into(), |x| format!("{x:.1e}")),
        vq_min = num(&vq["minutes"], 1),
        janus_min = num(&janus["minutes"], 1),
        total = num(&recipe["total_minutes"], 1),
        seeds = scores["seeds"]
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        und = list(&scores["understanding"]),
        gen = list(&scores["generation"]),
        und_total = pair(&scores["understanding_total"]),
        gen_total = pair(&scores["generation_total"]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_model_carries_the_recipe_generation_config() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/shapes-janus");
        assert_eq!(
            GenerationConfig::from_dir(&dir).unwrap(),
            generation_config()
        );
    }
}
