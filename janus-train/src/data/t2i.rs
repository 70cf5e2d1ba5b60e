//! Text-to-image samples: generation prompt ids, the image cropped to the generation size and
//! encoded to VQ codes by the frozen image tokenizer, an on-disk code cache, and CFG prompt
//! dropout.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use janus_core::Janus;
use janus_core::burn::module::Module;
use janus_core::burn::tensor::{Device, Tensor, TensorData};
use janus_core::janus_vq::VqModel;
use janus_core::processor::resize::resize_bicubic;
use janus_core::processor::{ChatRoles, Processor, ProcessorError, RgbImage, TokenId};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::error::DataError;
use super::mix::mix_seed;
use crate::batch::GenerationBatch;

/// One text-to-image training row.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSample {
    /// Prompt ids: BOS first, `<begin_of_image>` last (the unconditional form after dropout).
    pub text_ids: Vec<TokenId>,
    /// The image's codes, `grid²` of them, row-major.
    pub codes: Vec<i64>,
    /// Whether prompt dropout replaced the prompt with the unconditional one.
    pub unconditional: bool,
}

/// The text-to-image prompt ids of a caption: the template with an empty system prompt, then
/// `<begin_of_image>` (spec §8): `"{user}: {prompt}\n\n{assistant}:<begin_of_image>"`.
pub fn generation_prompt_ids(
    processor: &Processor,
    prompt: &str,
    roles: &ChatRoles,
) -> Result<Vec<TokenId>, ProcessorError> {
    let conversation = [roles.user_turn(prompt, 0, ""), roles.assistant_cue()];
    processor.generation_prompt_ids(&conversation)
}

/// Whether the prompt of a sample is dropped (replaced by the unconditional one), with
/// probability `p`, as a pure function of the seed, the epoch and the sample's position in
/// it — so a resumed run drops exactly the same prompts.
pub fn prompt_dropout(seed: u64, epoch: u64, position: u64, p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    if p >= 1.0 {
        return true;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, 0xD50F_u64, epoch, position]));
    // 53 random bits → uniform in [0, 1).
    let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    u < p
}

/// Python's `round` (half to even), as torchvision's centre crop uses it.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as usize
}

/// Resizes `image` so its short side is `size` (Pillow bicubic; the long side is
/// `int(size · long / short)`, as torchvision's `Resize(size)`) and centre-crops it to
/// `size × size` (torchvision's `CenterCrop`: offsets `round((side − size) / 2)`).
pub fn center_crop(image: &RgbImage, size: usize) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (short, long) = (w.min(h), w.max(h));
    let resized_long = ((size as f64 * long as f64 / short as f64) as usize).max(size);
    let (rw, rh) = if w <= h {
        (size, resized_long)
    } else {
        (resized_long, size)
    };
    let resized = if (rw, rh) == (w, h) {
        image.as_raw().clone()
    } else {
        resize_bicubic(image.as_raw(), w, h, 3, rw, rh)
    };
    let left = round_half_even((rw - size) as f64 / 2.0);
    let top = round_half_even((rh - size) as f64 / 2.0);
    let mut out = Vec::with_capacity(size * size * 3);
    for y in top..top + size {
        let row = (y * rw + left) * 3;
        out.extend_from_slice(&resized[row..row + size * 3]);
    }
    RgbImage::from_raw(size as u32, size as u32, out).expect("size × size × 3 bytes")
}

/// An RGB image as CHW floats in `[−1, 1]`: `(x / 255 − 0.5) / 0.5` in f32, as
/// `ToTensor` + `Normalize(0.5, 0.5)`.
pub fn to_unit_range(image: &RgbImage) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - 0.5) / 0.5;
        }
    }
    out
}

/// Turns images into VQ codes. [`VqCodeEncoder`] is the real one; tests may wrap it.
///
/// `Send`, so a loader can be moved to a prefetching thread.
pub trait CodeEncoder: Send {
    /// A string identifying the encoder's weights; part of every cache key, so codes of another
    /// model are never reused.
    fn identity(&self) -> &str;

    /// Side of the square images it takes (the generation image size).
    fn image_size(&self) -> usize;

    /// Codes per image (`grid²`).
    fn codes_per_image(&self) -> usize;

    /// Encodes `count` images given as CHW floats in `[−1, 1]`, concatenated
    /// (`count · 3 · S · S` values); returns each image's codes.
    fn encode(&self, pixels: &[f32], count: usize) -> Result<Vec<Vec<i64>>, DataError>;
}

/// The model's frozen VQ tokenizer on a device without autodiff.
#[derive(Debug)]
pub struct VqCodeEncoder {
    vq: VqModel,
    device: Device,
    image_size: usize,
    identity: String,
}

impl VqCodeEncoder {
    /// Wraps a VQ model; a validation copy is used (no autodiff graph is recorded even if the
    /// model lives on an autodiff device). `identity` names the weights for the code cache.
    pub fn new(vq: &VqModel, image_size: usize, identity: impl Into<String>) -> Self {
        let vq = vq.valid();
        let device = vq.post_quant_conv.weight.val().device();
        Self {
            vq,
            device,
            image_size,
            identity: identity.into(),
        }
    }

    /// The generation tokenizer of a loaded model, with an identity made of the model
    /// directory, the VQ shape and the size and modification time of its weight files.
    pub fn from_janus(janus: &Janus) -> Result<Self, DataError> {
        let dir = janus.dir();
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let g = &janus.config.gen_vision;
        let mut identity = format!(
            "{}|{}|{}x{}|{:?}|{}",
            canonical.display(),
            g.model_name,
            g.codebook_size,
            g.codebook_dim,
            g.ch_mult,
            g.image_size
        );
        let mut weights = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") || name.ends_with(".bin") {
                let meta = entry
                    .metadata()
                    .map_err(|e| DataError::io(entry.path(), e))?;
                weights.push(format!("{name}:{}:{}", meta.len(), mtime_ns(&meta)));
            }
        }
        weights.sort();
        for w in weights {
            identity.push('|');
            identity.push_str(&w);
        }
        Ok(Self::new(
            &janus.model.gen_vision_model,
            g.image_size,
            identity,
        ))
    }

    /// The device the encoder runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl CodeEncoder for VqCodeEncoder {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn image_size(&self) -> usize {
        self.image_size
    }

    fn codes_per_image(&self) -> usize {
        self.vq.codes_per_image(self.image_size)
    }

    fn encode(&self, pixels: &[f32], count: usize) -> Result<Vec<Vec<i64>>, DataError> {
        let s = self.image_size;
        if count == 0 {
            return Ok(Vec::new());
        }
        if pixels.len() != count * 3 * s * s {
            return Err(DataError::Vq(format!(
                "{} values for {count} image(s) of side {s}",
                pixels.len()
            )));
        }
        let image = Tensor::<4>::from_data(
            TensorData::new(pixels.to_vec(), [count, 3, s, s]),
            &self.device,
        );
        let encoding = self
            .vq
            .encode(image)
            .map_err(|e| DataError::Vq(e.to_string()))?;
        let codes: Vec<i64> = encoding.codes.into_data().iter::<i64>().collect();
        let per = codes.len() / count;
        Ok(codes.chunks(per.max(1)).map(<[i64]>::to_vec).collect())
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// FNV-1a, 64 bits, from a given basis: a hash that is stable across Rust versions.
fn fnv1a(bytes: &[u8], basis: u64) -> u64 {
    bytes.iter().fold(basis, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

const CACHE_MAGIC: &[u8] = b"JANUS-VQ-CODES-1\n";

/// VQ codes of images, cached so an epoch does not re-encode.
///
/// With a directory, each image's codes live in one file named by a 128-bit hash of the key
/// (canonical path, file size, modification time, image size, encoder identity); the file
/// also stores the full key, so a hash collision or a stale file is a miss, never wrong codes.
/// Writes go to a temporary file renamed into place. Without a directory the codes are kept
/// in memory for the run.
#[derive(Debug, Default)]
pub struct CodeCache {
    dir: Option<PathBuf>,
    memory: HashMap<String, Vec<i64>>,
}

impl CodeCache {
    /// A cache under `dir` (created if needed), or in memory when `None`.
    pub fn new(dir: Option<PathBuf>) -> Result<Self, DataError> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|e| DataError::Cache {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(Self {
            dir,
            memory: HashMap::new(),
        })
    }

    /// The cache directory, if on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The cache key of an image for an encoder: changes when the file, the size or the
    /// model change.
    pub fn key(image: &Path, image_size: usize, identity: &str) -> Result<String, DataError> {
        let meta = std::fs::metadata(image).map_err(|e| DataError::io(image, e))?;
        let canonical = image.canonicalize().unwrap_or_else(|_| image.to_path_buf());
        Ok(format!(
            "{}|{}|{}|{image_size}|{identity}",
            canonical.display(),
            meta.len(),
            mtime_ns(&meta)
        ))
    }

    /// The file holding the codes of `key`.
    pub fn file_for(&self, key: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let hi = fnv1a(key.as_bytes(), 0xcbf2_9ce4_8422_2325);
        let lo = fnv1a(key.as_bytes(), 0x6c62_272e_07bb_0142);
        Some(dir.join(format!("{hi:016x}{lo:016x}.codes")))
    }

    /// The cached codes of `key`, if any. Unreadable or mismatching files are misses.
    pub fn get(&self, key: &str) -> Option<Vec<i64>> {
        let Some(path) = self.file_for(key) else {
            return self.memory.get(key).cloned();
        };
        let bytes = std::fs::read(path).ok()?;
        let rest = bytes.strip_prefix(CACHE_MAGIC)?;
        let nl = rest.iter().position(|&b| b == b'\n')?;
        if &rest[..nl] != key.as_bytes() {
            return None;
        }
        let body = &rest[nl + 1..];
        let n = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
        let data = body.get(4..)?;
        if data.len() != n * 4 {
            return None;
        }
        Some(
            data.chunks_exact(4)
                .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        )
    }

    /// Stores the codes of `key`.
    pub fn put(&mut self, key: &str, codes: &[i64]) -> Result<(), DataError> {
        let Some(path) = self.file_for(key) else {
            self.memory.insert(key.to_owned(), codes.to_vec());
            return Ok(());
        };
        let cache_err = |message: String| DataError::Cache {
            path: path.clone(),
            message,
        };
        let mut bytes = Vec::with_capacity(CACHE_MAGIC.len() + key.len() + 5 + codes.len() * 4);
        bytes.extend_from_slice(CACHE_MAGIC);
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(&(codes.len() as u32).to_le_bytes());
        for &c in codes {
            let c = u32::try_from(c).map_err(|_| cache_err(format!("code {c} out of range")))?;
            bytes.extend_from_slice(&c.to_le_bytes());
        }
        // Write then rename, so a crash never leaves a half-written entry under the real name.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(|e| cache_err(e.to_string()))?;
        file.write_all(&bytes)
            .map_err(|e| cache_err(e.to_string()))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|e| cache_err(e.to_string()))
    }
}

/// Gathers text-to-image rows into a [`GenerationBatch`] (rows keep their own lengths; the
/// loss left-pads them).
pub fn collate_generation(rows: &[GenSample]) -> GenerationBatch {
    GenerationBatch {
        text_ids: rows.iter().map(|r| r.text_ids.clone()).collect(),
        codes: rows.iter().map(|r| r.codes.clone()).collect(),
    }
}
