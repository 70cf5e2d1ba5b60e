//! The checkpoint key-remap tables: checkpoint key ↔ janus-rs module path, for both layouts
//! ([`ModelLayout`]).
//!
//! ## Original layout
//!
//! Module fields carry the original checkpoint's own names, so most keys map to themselves.
//! The rows below are every exception, applied in order; each is invertible, so a missing
//! parameter is reported under the key the file should have had.
//!
//! | checkpoint key | module path | why |
//! |---|---|---|
//! | `vision_model.vision_tower.attn_pool.*` | — (skipped) | built by the reference, never run |
//! | `gen_vision_model.quantize.codebook_used` | — (skipped) | training statistics buffer |
//! | `*.rotary_emb.inv_freq` | — (skipped) | RoPE table, recomputed |
//! | `vision_model.vision_tower.X` | `vision_model.X` | the `CLIPVisionTower` wrapper has no parameters of its own |
//! | `aligner.layers.{2k}.*`, `gen_aligner.layers.{2k}.*` | `….layers.{k}.*` | `nn.Sequential` counts the parameter-free GELU at odd indices |
//! | `gen_vision_model.{encoder,decoder}.mid.0` | `….mid.block_1` | mixed-type `ModuleList`, named fields here |
//! | `gen_vision_model.{encoder,decoder}.mid.1` | `….mid.attn_1` | |
//! | `gen_vision_model.{encoder,decoder}.mid.2` | `….mid.block_2` | |
//!
//! ## Transformers layout
//!
//! transformers' conversion renames every prefix, splits the SigLIP `qkv` projection and
//! squeezes the position embedding; the loader undoes both (a fused parameter is assembled
//! from its parts, see [`Placement`]) and the exporter redoes them.
//!
//! | checkpoint key | module path | why |
//! |---|---|---|
//! | `*.rotary_emb.inv_freq` | — (skipped) | RoPE table, recomputed |
//! | `model.vision_model.embeddings.patch_embedding.*` | `vision_model.patch_embed.proj.*` | |
//! | `model.vision_model.embeddings.position_embedding.weight` `[N, W]` | `vision_model.pos_embed` `[1, N, W]` | stored without the leading batch axis |
//! | `model.vision_model.encoder.layers.N.self_attn.{q,k,v}_proj.*` | `vision_model.blocks.N.attn.qkv.*`, row blocks 0, 1, 2 | the original fuses q, k, v into one Linear (rows q, then k, then v) |
//! | `model.vision_model.encoder.layers.N.self_attn.projection_layer.*` | `vision_model.blocks.N.attn.proj.*` | |
//! | `model.vision_model.encoder.layers.N.layer_norm{1,2}.*` | `vision_model.blocks.N.norm{1,2}.*` | |
//! | `model.vision_model.encoder.layers.N.mlp.*` | `vision_model.blocks.N.mlp.*` | |
//! | `model.vision_model.post_layernorm.*` | `vision_model.norm.*` | |
//! | `model.aligner.fc1.*`, `model.aligner.hidden_layers.{k}.*` | `aligner.layers.0.*`, `aligner.layers.{k+1}.*` | first Linear and the rest are separate fields |
//! | `model.generation_aligner.*` | `gen_aligner.*` | as `model.aligner` |
//! | `model.generation_head.proj_out.*` | `gen_head.output_mlp_projector.*` | |
//! | `model.generation_head.vision_head.*` | `gen_head.vision_head.*` | |
//! | `model.generation_embeddings.*` | `gen_embed.*` | |
//! | `model.vqmodel.*` | `gen_vision_model.*` | with `encoder.down` → `encoder.conv_blocks`, `decoder.up` → `decoder.conv_blocks` (same indices: `up.0` is the first block run, at the lowest resolution), `.block.` → `.res.`; `mid.block_1/attn_1/block_2` are already the module's names |
//! | `model.language_model.*` | `language_model.model.*` | |
//! | `lm_head.weight` | `language_model.lm_head.weight` | |
//!
//! The original's unused `attn_pool.*` and `quantize.codebook_used` tensors do not exist in
//! this layout.
//!
//! ## Both
//!
//! Inside modules built from burn's `Linear`, `LayerNorm` and `GroupNorm`, burn-store's
//! `PyTorchToBurnAdapter` transposes Linear weights and maps `weight`/`bias` to
//! `gamma`/`beta`; module paths here are written in the PyTorch spelling.

use crate::config::ModelLayout;

/// The checkpoint prefix of the vision tower and the module prefix that replaces it.
const VISION: (&str, &str) = ("vision_model.vision_tower.", "vision_model.");
/// Sequential projectors whose layer indices skip the activation.
const PROJECTORS: [&str; 2] = ["aligner.layers.", "gen_aligner.layers."];
/// `mid` entries of the VQ encoder and decoder.
const MID: [(&str, &str); 3] = [("0", "block_1"), ("1", "attn_1"), ("2", "block_2")];

/// Whether the forward pass never uses this checkpoint key.
pub fn is_ignored(key: &str) -> bool {
    key.starts_with("vision_model.vision_tower.attn_pool.")
        || key == "gen_vision_model.quantize.codebook_used"
        || key.ends_with("rotary_emb.inv_freq")
}

/// Module path for a checkpoint key (`None` for ignored keys).
pub fn to_module_path(key: &str) -> Option<String> {
    if is_ignored(key) {
        return None;
    }
    if let Some(rest) = key.strip_prefix(VISION.0) {
        return Some(format!("{}{rest}", VISION.1));
    }
    for prefix in PROJECTORS {
        if let Some(rest) = key.strip_prefix(prefix)
            && let Some((index, tail)) = rest.split_once('.')
            && let Ok(i) = index.parse::<usize>()
        {
            // An odd index is a parameter the reference's GELU cannot have: keep it unmatched
            // so it is reported as unexpected instead of landing on layer i.
            return Some(match i % 2 {
                0 => format!("{prefix}{}.{tail}", i / 2),
                _ => format!("{prefix}<odd {i}>.{tail}"),
            });
        }
    }
    for part in [
        "gen_vision_model.encoder.mid.",
        "gen_vision_model.decoder.mid.",
    ] {
        if let Some(rest) = key.strip_prefix(part)
            && let Some((index, tail)) = rest.split_once('.')
            && let Some((_, name)) = MID.iter().find(|(i, _)| *i == index)
        {
            return Some(format!("{part}{name}.{tail}"));
        }
    }
    Some(key.to_string())
}

/// Checkpoint key for a module path (the inverse of [`to_module_path`]).
pub fn to_checkpoint_key(path: &str) -> String {
    if let Some(rest) = path.strip_prefix(VISION.1) {
        return format!("{}{rest}", VISION.0);
    }
    for prefix in PROJECTORS {
        if let Some(rest) = path.strip_prefix(prefix)
            && let Some((index, tail)) = rest.split_once('.')
            && let Ok(i) = index.parse::<usize>()
        {
            return format!("{prefix}{}.{tail}", 2 * i);
        }
    }
    for part in [
        "gen_vision_model.encoder.mid.",
        "gen_vision_model.decoder.mid.",
    ] {
        if let Some(rest) = path.strip_prefix(part)
            && let Some((name, tail)) = rest.split_once('.')
            && let Some((index, _)) = MID.iter().find(|(_, n)| *n == name)
        {
            return format!("{part}{index}.{tail}");
        }
    }
    path.to_string()
}

/// Where one checkpoint tensor goes in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The whole parameter at this module path, same shape.
    Whole(String),
    /// The whole parameter at this module path, which has a leading axis of size 1 that the
    /// file leaves out.
    Unsqueezed(String),
    /// Row block `index` of `count` equal blocks along the first axis of the parameter at
    /// `path` (a fused projection stored as separate tensors).
    Part {
        /// Module path of the fused parameter.
        path: String,
        /// Which block, from 0.
        index: usize,
        /// How many blocks make the parameter.
        count: usize,
    },
}

impl Placement {
    /// Module path of the parameter.
    pub fn path(&self) -> &str {
        match self {
            Self::Whole(p) | Self::Unsqueezed(p) | Self::Part { path: p, .. } => p,
        }
    }
}

/// Where the checkpoint tensor `key` of a `layout` checkpoint goes (`None` for tensors the
/// forward pass never uses). Keys of no known module map to themselves, which no module path
/// matches, so the loader reports them as unexpected.
pub fn placement(layout: ModelLayout, key: &str) -> Option<Placement> {
    match layout {
        ModelLayout::Original => to_module_path(key).map(Placement::Whole),
        ModelLayout::Hf => hf_placement(key),
    }
}

/// The checkpoint keys that hold the parameter at module path `path` in `layout`: one key,
/// or the blocks of a fused parameter in order (the inverse of [`placement`]).
pub fn checkpoint_keys(layout: ModelLayout, path: &str) -> Vec<String> {
    match layout {
        ModelLayout::Original => vec![to_checkpoint_key(path)],
        ModelLayout::Hf => hf_keys(path),
    }
}

/// transformers-layout prefixes whose tails need no renaming: (checkpoint, module).
const HF_PREFIXES: [(&str, &str); 8] = [
    ("lm_head.", "language_model.lm_head."),
    ("model.language_model.", "language_model.model."),
    ("model.generation_embeddings.", "gen_embed."),
    (
        "model.generation_head.proj_out.",
        "gen_head.output_mlp_projector.",
    ),
    (
        "model.generation_head.vision_head.",
        "gen_head.vision_head.",
    ),
    (
        "model.vision_model.embeddings.patch_embedding.",
        "vision_model.patch_embed.proj.",
    ),
    ("model.vision_model.post_layernorm.", "vision_model.norm."),
    ("model.vision_model.encoder.layers.", "vision_model.blocks."),
];
/// SigLIP block members: (checkpoint, module).
const HF_BLOCK: [(&str, &str); 4] = [
    ("layer_norm1.", "norm1."),
    ("layer_norm2.", "norm2."),
    ("self_attn.projection_layer.", "attn.proj."),
    ("mlp.", "mlp."),
];
/// The split q, k, v projections of a SigLIP block, in the fused row order.
const HF_QKV: [&str; 3] = [
    "self_attn.q_proj.",
    "self_attn.k_proj.",
    "self_attn.v_proj.",
];
const HF_POS_EMBED: (&str, &str) = (
    "model.vision_model.embeddings.position_embedding.weight",
    "vision_model.pos_embed",
);
/// Projectors: (checkpoint, module).
const HF_PROJECTORS: [(&str, &str); 2] = [
    ("model.aligner.", "aligner.layers."),
    ("model.generation_aligner.", "gen_aligner.layers."),
];
const HF_VQ: (&str, &str) = ("model.vqmodel.", "gen_vision_model.");

fn hf_placement(key: &str) -> Option<Placement> {
    if key.ends_with("rotary_emb.inv_freq") {
        return None;
    }
    let whole = |p: String| Some(Placement::Whole(p));
    if key == HF_POS_EMBED.0 {
        return Some(Placement::Unsqueezed(HF_POS_EMBED.1.into()));
    }
    for (from, to) in HF_PREFIXES {
        let Some(rest) = key.strip_prefix(from) else {
            continue;
        };
        if to != "vision_model.blocks." {
            return whole(format!("{to}{rest}"));
        }
        let Some((layer, member)) = rest.split_once('.') else {
            break;
        };
        if let Some((index, tail)) = HF_QKV
            .iter()
            .enumerate()
            .find_map(|(i, q)| member.strip_prefix(q).map(|t| (i, t)))
        {
            return Some(Placement::Part {
                path: format!("{to}{layer}.attn.qkv.{tail}"),
                index,
                count: HF_QKV.len(),
            });
        }
        for (from, to_member) in HF_BLOCK {
            if let Some(tail) = member.strip_prefix(from) {
                return whole(format!("{to}{layer}.{to_member}{tail}"));
            }
        }
        break;
    }
    for (from, to) in HF_PROJECTORS {
        let Some(rest) = key.strip_prefix(from) else {
            continue;
        };
        if let Some(tail) = rest.strip_prefix("fc1.") {
            return whole(format!("{to}0.{tail}"));
        }
        if let Some(rest) = rest.strip_prefix("hidden_layers.")
            && let Some((index, tail)) = rest.split_once('.')
            && let Ok(i) = index.parse::<usize>()
        {
            return whole(format!("{to}{}.{tail}", i + 1));
        }
        break;
    }
    if let Some(rest) = key.strip_prefix(HF_VQ.0) {
        let mut parts: Vec<&str> = rest.split('.').collect();
        for i in 0..parts.len() {
            parts[i] = match (i.checked_sub(1).map(|j| parts[j]), parts[i]) {
                (Some("encoder"), "down") | (Some("decoder"), "up") => "conv_blocks",
                (_, "block") => "res",
                (_, other) => other,
            };
        }
        return whole(format!("{}{}", HF_VQ.1, parts.join(".")));
    }
    whole(key.to_string())
}

fn hf_keys(path: &str) -> Vec<String> {
    if path == HF_POS_EMBED.1 {
        return vec![HF_POS_EMBED.0.into()];
    }
    if let Some(rest) = path.strip_prefix("vision_model.blocks.")
        && let Some((layer, member)) = rest.split_once('.')
    {
        let base = "model.vision_model.encoder.layers.";
        if let Some(tail) = member.strip_prefix("attn.qkv.") {
            return HF_QKV
                .iter()
                .map(|q| format!("{base}{layer}.{q}{tail}"))
                .collect();
        }
        for (to, from) in HF_BLOCK {
            if let Some(tail) = member.strip_prefix(from) {
                return vec![format!("{base}{layer}.{to}{tail}")];
            }
        }
    }
    for (to, from) in HF_PREFIXES {
        if let Some(rest) = path.strip_prefix(from) {
            return vec![format!("{to}{rest}")];
        }
    }
    for (to, from) in HF_PROJECTORS {
        if let Some(rest) = path.strip_prefix(from)
            && let Some((index, tail)) = rest.split_once('.')
            && let Ok(i) = index.parse::<usize>()
        {
            return vec![match i {
                0 => format!("{to}fc1.{tail}"),
                _ => format!("{to}hidden_layers.{}.{tail}", i - 1),
            }];
        }
    }
    if let Some(rest) = path.strip_prefix(HF_VQ.1) {
        let mut parts: Vec<&str> = rest.split('.').collect();
        for i in 0..parts.len() {
            parts[i] = match (i.checked_sub(1).map(|j| parts[j]), parts[i]) {
                (Some("encoder"), "conv_blocks") => "down",
                (Some("decoder"), "conv_blocks") => "up",
                (_, "res") => "block",
                (_, other) => other,
            };
        }
        return vec![format!("{}{}", HF_VQ.0, parts.join("."))];
    }
    vec![path.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_round_trips() {
        for key in [
            "vision_model.vision_tower.blocks.3.attn.qkv.weight",
            "aligner.layers.2.bias",
            "gen_aligner.layers.0.weight",
            "gen_vision_model.decoder.mid.1.q.weight",
            "gen_vision_model.encoder.mid.2.conv1.bias",
            "language_model.model.layers.10.self_attn.q_proj.weight",
            "gen_head.vision_head.weight",
        ] {
            let path = to_module_path(key).unwrap();
            assert_eq!(to_checkpoint_key(&path), key);
        }
        assert_eq!(
            to_module_path("aligner.layers.2.bias").unwrap(),
            "aligner.layers.1.bias"
        );
        assert_eq!(
            to_module_path("gen_vision_model.decoder.mid.1.q.weight").unwrap(),
            "gen_vision_model.decoder.mid.attn_1.q.weight"
        );
    }

    #[test]
    fn hf_rules_round_trip() {
        for (key, path) in [
            (
                "model.vision_model.encoder.layers.1.self_attn.projection_layer.bias",
                "vision_model.blocks.1.attn.proj.bias",
            ),
            (
                "model.vision_model.encoder.layers.0.layer_norm2.weight",
                "vision_model.blocks.0.norm2.weight",
            ),
            (
                "model.vision_model.embeddings.patch_embedding.weight",
                "vision_model.patch_embed.proj.weight",
            ),
            (
                "model.vision_model.post_layernorm.bias",
                "vision_model.norm.bias",
            ),
            ("model.aligner.fc1.weight", "aligner.layers.0.weight"),
            (
                "model.generation_aligner.hidden_layers.0.bias",
                "gen_aligner.layers.1.bias",
            ),
            (
                "model.generation_head.proj_out.weight",
                "gen_head.output_mlp_projector.weight",
            ),
            ("model.generation_embeddings.weight", "gen_embed.weight"),
            (
                "model.vqmodel.decoder.up.2.block.0.nin_shortcut.weight",
                "gen_vision_model.decoder.conv_blocks.2.res.0.nin_shortcut.weight",
            ),
            (
                "model.vqmodel.encoder.down.0.downsample.conv.bias",
                "gen_vision_model.encoder.conv_blocks.0.downsample.conv.bias",
            ),
            (
                "model.vqmodel.decoder.mid.block_1.conv1.weight",
                "gen_vision_model.decoder.mid.block_1.conv1.weight",
            ),
            (
                "model.vqmodel.quantize.embedding.weight",
                "gen_vision_model.quantize.embedding.weight",
            ),
            (
                "model.language_model.layers.3.self_attn.o_proj.weight",
                "language_model.model.layers.3.self_attn.o_proj.weight",
            ),
            ("lm_head.weight", "language_model.lm_head.weight"),
        ] {
            assert_eq!(
                placement(ModelLayout::Hf, key),
                Some(Placement::Whole(path.into())),
                "{key}"
            );
            assert_eq!(
                checkpoint_keys(ModelLayout::Hf, path),
                vec![key.to_string()]
            );
        }
    }

    #[test]
    fn hf_fused_and_squeezed_tensors() {
        let qkv = "vision_model.blocks.4.attn.qkv.weight";
        let keys = checkpoint_keys(ModelLayout::Hf, qkv);
        assert_eq!(keys.len(), 3);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                placement(ModelLayout::Hf, key),
                Some(Placement::Part {
                    path: qkv.into(),
                    index: i,
                    count: 3
                })
            );
        }
        assert!(keys[1].ends_with("layers.4.self_attn.k_proj.weight"));
        let key = "model.vision_model.embeddings.position_embedding.weight";
        assert_eq!(
            placement(ModelLayout::Hf, key),
            Some(Placement::Unsqueezed("vision_model.pos_embed".into()))
        );
        assert_eq!(
            checkpoint_keys(ModelLayout::Hf, "vision_model.pos_embed"),
            vec![key.to_string()]
        );
        assert!(placement(ModelLayout::Hf, "model.language_model.rotary_emb.inv_freq").is_none());
    }

    #[test]
    fn unused_keys_are_skipped() {
        assert!(to_module_path("vision_model.vision_tower.attn_pool.latent").is_none());
        assert!(to_module_path("gen_vision_model.quantize.codebook_used").is_none());
        assert!(
            to_module_path("language_model.model.layers.0.self_attn.rotary_emb.inv_freq").is_none()
        );
    }
}
