//! Next-token sampling: temperature, top-k, top-p and a seeded multinomial draw.
//!
//! The pipeline follows Hugging Face's logits processors, applied in this order:
//!
//! 1. **temperature**: logits are divided by `temperature`; `0` means greedy argmax instead;
//! 2. **top-k**: only the `k` largest logits stay (every logit equal to the `k`-th largest stays
//!    too, as in HF's `TopKLogitsWarper`);
//! 3. **top-p**: of what is left, only the smallest set of most probable tokens whose probability
//!    sums to at least `top_p` stays (at least one token always stays; equal logits rank by
//!    increasing id);
//! 4. **softmax** over the survivors and a **multinomial** draw by inverse CDF.
//!
//! The logits are read to the host once per call; everything after that runs on the host, with
//! probabilities in `f64`. One row is one independent draw, so the same code serves text decoding
//! (a vocabulary of ~102 400 ids) and image generation (16 384 codes, after the CFG mix).

use burn::tensor::{DType, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::LlmError;

/// How [`Sampler`] turns a row of logits into a token id.
///
/// The default is plain multinomial sampling: temperature 1, no top-k, no top-p, seed 42.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Divides the logits before the softmax. `0` selects greedy decoding (argmax, the first
    /// index on ties, like `torch.argmax`); must be finite and not negative. Default `1.0`.
    pub temperature: f64,
    /// Keep only the `k` largest logits (and any tied with the `k`-th). `None` keeps all;
    /// `Some(0)` is invalid. Default `None`.
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of most probable tokens whose probability sums to
    /// at least `top_p`, in `(0, 1]`. `None` (or `1.0`) keeps all. Default `None`.
    pub top_p: Option<f64>,
    /// Seed of the sampler's ChaCha8 stream, reproducible across platforms. Default `42`.
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 42,
        }
    }
}

impl SamplingOptions {
    /// Greedy decoding: temperature `0`, the other fields at their defaults.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Sets [`temperature`](Self::temperature).
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }

    /// Sets [`top_k`](Self::top_k).
    pub fn with_top_k(mut self, top_k: Option<usize>) -> Self {
        self.top_k = top_k;
        self
    }

    /// Sets [`top_p`](Self::top_p).
    pub fn with_top_p(mut self, top_p: Option<f64>) -> Self {
        self.top_p = top_p;
        self
    }

    /// Sets [`seed`](Self::seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether these options decode greedily (temperature `0`).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field against its documented range.
    ///
    /// # Errors
    ///
    /// [`LlmError::InvalidTemperature`], [`LlmError::InvalidTopK`] or [`LlmError::InvalidTopP`].
    pub fn validate(&self) -> Result<(), LlmError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(LlmError::InvalidTemperature(self.temperature));
        }
        if self.top_k == Some(0) {
            return Err(LlmError::InvalidTopK);
        }
        if let Some(p) = self.top_p {
            // Written so that NaN fails too.
            if !(p > 0.0 && p <= 1.0) {
                return Err(LlmError::InvalidTopP(p));
            }
        }
        Ok(())
    }
}

/// Draws token ids from logits with a seeded random stream.
///
/// Every call to [`sample`](Self::sample) takes exactly one uniform number per row from the
/// stream (even when greedy), in row order, so the same seed and the same sequence of logits
/// give the same ids on every platform.
#[derive(Debug, Clone)]
pub struct Sampler {
    options: SamplingOptions,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler seeded with `options.seed`.
    ///
    /// # Errors
    ///
    /// The errors of [`SamplingOptions::validate`].
    pub fn new(options: SamplingOptions) -> Result<Self, LlmError> {
        options.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(options.seed);
        Ok(Self { options, rng })
    }

    /// The options this sampler was built with.
    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// Draws one id per row.
    ///
    /// # Shapes
    ///
    /// - `logits`: `[rows, vocab]`, any float dtype
    /// - output: `rows` ids in `0..vocab`
    ///
    /// # Errors
    ///
    /// See [`sample_from_uniform`].
    pub fn sample(&mut self, logits: Tensor<2>) -> Result<Vec<i64>, LlmError> {
        let [rows, _] = logits.dims();
        let uniforms: Vec<f64> = (0..rows).map(|_| next_uniform(&mut self.rng)).collect();
        sample_from_uniform(logits, &self.options, &uniforms)
    }
}

/// A uniform `f64` in `[0, 1)` from the top 53 bits of one `u64`.
///
/// Done by hand rather than through `rand`'s distributions so the mapping from seed to id
/// depends only on the ChaCha stream, which `rand_chacha` keeps value-stable.
fn next_uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Draws one id per row with caller-supplied uniform numbers instead of a random stream.
///
/// This is the deterministic core of [`Sampler::sample`]; tests use it to pin a draw. After
/// temperature, top-k and top-p, the surviving ids are walked in increasing id order and the
/// row's uniform `u` selects the first id whose cumulative probability exceeds `u`. Greedy
/// options ignore the uniforms (their count is still checked).
///
/// Logits are read to the host once as `f32` (bf16 and f16 exactly, f64 rounded; quantized
/// tensors are dequantized first). Non-finite logits:
///
/// - `-inf` is a masked token: it is never drawn;
/// - `+inf` wins outright: if a row has any, they share all probability equally (the limit of a
///   growing logit), and greedy picks the first;
/// - NaN fails the row, as does a row with nothing but `-inf`.
///
/// # Shapes
///
/// - `logits`: `[rows, vocab]`
/// - `uniforms`: `rows` numbers in `[0, 1)`
/// - output: `rows` ids in `0..vocab`
///
/// # Errors
///
/// - the errors of [`SamplingOptions::validate`];
/// - [`LlmError::UniformCount`] or [`LlmError::InvalidUniform`] for bad `uniforms`;
/// - [`LlmError::NonFiniteLogits`] for a row with a NaN;
/// - [`LlmError::NoCandidates`] for a row where every logit is `-inf` (or `vocab` is 0);
/// - [`LlmError::LogitsRead`] if the backend cannot read the logits.
pub fn sample_from_uniform(
    logits: Tensor<2>,
    options: &SamplingOptions,
    uniforms: &[f64],
) -> Result<Vec<i64>, LlmError> {
    options.validate()?;
    let [rows, vocab] = logits.dims();
    if uniforms.len() != rows {
        return Err(LlmError::UniformCount {
            expected: rows,
            found: uniforms.len(),
        });
    }
    if let Some(row) = uniforms.iter().position(|u| !(0.0..1.0).contains(u)) {
        return Err(LlmError::InvalidUniform {
            row,
            value: uniforms[row],
        });
    }
    if rows == 0 {
        return Ok(Vec::new());
    }

    // The only host read of the call.
    let logits = if matches!(logits.dtype(), DType::QFloat(_)) {
        logits.dequantize()
    } else {
        logits
    };
    let host = logits
        .try_into_vec_as::<f32>()
        .map_err(|err| LlmError::LogitsRead(err.to_string()))?;

    let mut scratch = Scratch::default();
    (0..rows)
        .map(|row| {
            let values = &host[row * vocab..(row + 1) * vocab];
            sample_row(values, row, options, uniforms[row], &mut scratch)
        })
        .collect()
}

/// A token still in the running.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    /// Unnormalised probability, `exp((logit - max) / temperature)`.
    weight: f64,
}

/// Buffers reused across the rows of one call.
#[derive(Debug, Default)]
struct Scratch {
    candidates: Vec<Candidate>,
    select: Vec<u32>,
    keys: Vec<u64>,
}

fn sample_row(
    values: &[f32],
    row: usize,
    options: &SamplingOptions,
    uniform: f64,
    scratch: &mut Scratch,
) -> Result<i64, LlmError> {
    // One pass: NaN check, max and first argmax.
    let mut argmax = None;
    let mut max = f32::NEG_INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            return Err(LlmError::NonFiniteLogits { row });
        }
        if v > max || (argmax.is_none() && v > f32::NEG_INFINITY) {
            max = v;
            argmax = Some(i);
        }
    }
    let Some(argmax) = argmax else {
        return Err(LlmError::NoCandidates { row });
    };
    if options.is_greedy() {
        return Ok(argmax as i64);
    }

    let candidates = &mut scratch.candidates;
    candidates.clear();
    if max == f32::INFINITY {
        // Every +inf logit has probability 1/count in the limit; nothing else can be drawn, and
        // top-k keeps them all (they tie at the top).
        candidates.extend(
            values
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == f32::INFINITY)
                .map(|(i, &logit)| Candidate {
                    id: i as u32,
                    logit,
                    weight: 1.0,
                }),
        );
    } else {
        // Top-k as a threshold: the k-th largest logit, found in O(vocab) without sorting.
        let threshold = match options.top_k {
            Some(k) if k < values.len() => {
                let select = &mut scratch.select;
                select.clear();
                select.extend(values.iter().map(|&v| descending_bits(v)));
                let (_, kth, _) = select.select_nth_unstable(k - 1);
                // Back from the key; -0.0 comes back as +0.0, which compares the same.
                logit_from_descending_bits(*kth)
            }
            _ => f32::NEG_INFINITY,
        };
        let max = f64::from(max);
        let temperature = options.temperature;
        candidates.extend(
            values
                .iter()
                .enumerate()
                // `-inf` never survives: its probability is exactly 0.
                .filter(|(_, v)| **v >= threshold && **v > f32::NEG_INFINITY)
                .map(|(i, &logit)| Candidate {
                    id: i as u32,
                    logit,
                    // Shift by the max so the largest weight is exactly 1 and nothing overflows.
                    weight: ((f64::from(logit) - max) / temperature).exp(),
                }),
        );
    }

    if let Some(top_p) = options.top_p.filter(|p| *p < 1.0) {
        keep_nucleus(candidates, &mut scratch.keys, top_p);
    }

    draw(candidates, uniform).ok_or(LlmError::NoCandidates { row })
}

/// A `u32` that orders finite and infinite `f32`s from largest to smallest (NaN excluded).
///
/// Integer keys let the top-k selection and the top-p sort use plain integer comparisons
/// instead of a float comparator.
fn descending_bits(value: f32) -> u32 {
    // `+ 0.0` turns -0.0 into +0.0, so the two tie as they do under `==`.
    let bits = (value + 0.0).to_bits();
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

/// The inverse of [`descending_bits`].
fn logit_from_descending_bits(key: u32) -> f32 {
    let ascending = !key;
    let bits = if ascending >> 31 == 1 {
        ascending & 0x7fff_ffff
    } else {
        !ascending
    };
    f32::from_bits(bits)
}

/// Keeps, in id order, the smallest set of most probable `candidates` whose mass reaches
/// `top_p` of the total; `candidates` must be in id order.
///
/// Tokens are ranked by logit, equal logits by increasing id. Only as much as needed is
/// sorted: chunks of growing size are split off with `select_nth_unstable` and sorted one at a
/// time until the mass is reached.
fn keep_nucleus(candidates: &mut Vec<Candidate>, keys: &mut Vec<u64>, top_p: f64) {
    let total: f64 = candidates.iter().map(|c| c.weight).sum();
    let target = top_p * total;
    // Rank in the high half, position in the low half: candidates are in id order, so the
    // position breaks ties by id and leads back to the candidate.
    keys.clear();
    keys.extend(
        candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (u64::from(descending_bits(c.logit)) << 32) | i as u64),
    );
    let len = keys.len();
    let mut kept = len;
    let mut cumulative = 0.0;
    let mut done = 0;
    let mut chunk = 64;
    'chunks: while done < len {
        let end = (done + chunk).min(len);
        if end < len {
            keys[done..].select_nth_unstable(end - done - 1);
        }
        keys[done..end].sort_unstable();
        for (i, key) in keys[done..end].iter().enumerate() {
            cumulative += candidates[*key as u32 as usize].weight;
            if cumulative >= target {
                kept = done + i + 1;
                break 'chunks;
            }
        }
        done = end;
        chunk *= 4;
    }
    // If rounding kept the sum just short of the target, everything stays.

    // Back to id order for the draw. Sorted positions are distinct and ascending, so each
    // source slot is at or after its destination and the compaction can run in place.
    let positions = &mut keys[..kept];
    positions.sort_unstable_by_key(|key| *key as u32);
    for (slot, key) in positions.iter().enumerate() {
        candidates[slot] = candidates[*key as u32 as usize];
    }
    candidates.truncate(kept);
}

/// Inverse CDF over `candidates` in their current order; `None` only if none has any mass.
fn draw(candidates: &[Candidate], uniform: f64) -> Option<i64> {
    let total: f64 = candidates.iter().map(|c| c.weight).sum();
    let target = uniform * total;
    let mut cumulative = 0.0;
    for c in candidates {
        cumulative += c.weight;
        if cumulative > target {
            return Some(i64::from(c.id));
        }
    }
    // Rounding can leave `target` at the very top; the last token with any mass takes it (the
    // maximum always survives with weight 1, so there is one).
    candidates
        .iter()
        .rev()
        .find(|c| c.weight > 0.0)
        .map(|c| i64::from(c.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descending_bits_order_and_invert() {
        let descending = [
            f32::INFINITY,
            f32::MAX,
            1.5,
            f32::MIN_POSITIVE,
            1e-45,
            0.0,
            -1e-45,
            -1.5,
            f32::MIN,
            f32::NEG_INFINITY,
        ];
        for pair in descending.windows(2) {
            assert!(
                descending_bits(pair[0]) < descending_bits(pair[1]),
                "{pair:?}"
            );
        }
        for v in descending {
            assert_eq!(logit_from_descending_bits(descending_bits(v)), v);
        }
        assert_eq!(descending_bits(-0.0), descending_bits(0.0));
    }
}
