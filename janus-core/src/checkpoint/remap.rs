//! The checkpoint key-remap table: original Janus key ↔ janus-rs module path.
//!
//! Module fields carry the checkpoint's own names, so most keys map to themselves. The rows
//! below are every exception, applied in order; each is invertible, so a missing parameter is
//! reported under the key the file should have had.
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
//! Inside modules built from burn's `Linear`, `LayerNorm` and `GroupNorm`, burn-store's
//! `PyTorchToBurnAdapter` transposes Linear weights and maps `weight`/`bias` to
//! `gamma`/`beta`; module paths here are written in the PyTorch spelling.

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
    fn unused_keys_are_skipped() {
        assert!(to_module_path("vision_model.vision_tower.attn_pool.latent").is_none());
        assert!(to_module_path("gen_vision_model.quantize.codebook_used").is_none());
        assert!(
            to_module_path("language_model.model.layers.0.self_attn.rotary_emb.inv_freq").is_none()
        );
    }
}
