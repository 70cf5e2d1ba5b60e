//! Attention of one new query per head over a KV cache (a decode or image-generation step).
//!
//! A step reads the whole cache once, so like the few-row products it is bound by memory: each
//! (batch, key/value head) is one task on rayon's pool, which streams that head's cached keys
//! (`Q·Kᵀ` as dot products over contiguous key rows) and values (`P·V` as rows accumulated into
//! the output) straight from the cache buffer, f32 or f16, without copying it. Query heads
//! sharing a key/value head (GQA) are processed together, so the head is read once for them.

use rayon::prelude::*;

use crate::kernels::act::softmax_row;
use crate::kernels::rows::{Avx2Element, Isa, Weights, axpy_group, dot_group};

/// Query rows applied together to one key or value row (the row kernels' register blocking).
const GROUP: usize = 4;

/// One side (keys or values) of a layer's cache: `[batch, kv_heads, len, head_dim]` inside a
/// larger buffer, each head's `len` rows contiguous.
#[derive(Clone, Copy, Debug)]
pub struct CacheView<'a> {
    /// The whole buffer.
    pub data: Weights<'a>,
    /// Index of element `[0, 0, 0, 0]`.
    pub offset: usize,
    /// Distance between batch rows, in elements.
    pub batch_stride: usize,
    /// Distance between heads, in elements.
    pub head_stride: usize,
}

/// Rows `0..len` of head `h` of batch row `b`, or `None` past the buffer's end.
fn head<'a, E>(
    view: &CacheView<'_>,
    data: &'a [E],
    (b, h): (usize, usize),
    len: usize,
    head_dim: usize,
) -> Option<&'a [E]> {
    let start = view.offset + b * view.batch_stride + h * view.head_stride;
    data.get(start..start + len * head_dim)
}

/// `softmax(q·Kᵀ/√d + mask)·V` for one query per head.
///
/// `q` is `[batch, heads, head_dim]`; `keys` and `values` hold `len` cached positions of
/// `kv_heads` heads (`heads` a multiple of it); `masked` (`[batch, heads, len]`, `true` = the
/// key is not attended) is optional. Returns `[batch, heads, head_dim]`, or `None` when the
/// sizes do not fit together or a head lies outside its buffer.
/// Keys and values must have the same element type.
#[allow(clippy::too_many_arguments)]
pub fn cached_attention(
    q: &[f32],
    batch: usize,
    heads: usize,
    head_dim: usize,
    keys: CacheView<'_>,
    values: CacheView<'_>,
    kv_heads: usize,
    len: usize,
    masked: Option<&[bool]>,
) -> Option<Vec<f32>> {
    let sizes = Sizes {
        batch,
        heads,
        head_dim,
        kv_heads,
        len,
    };
    match (keys.data, values.data) {
        (Weights::F32(k), Weights::F32(v)) => run(q, sizes, (&keys, k), (&values, v), masked),
        (Weights::F16(k), Weights::F16(v)) => run(q, sizes, (&keys, k), (&values, v), masked),
        (Weights::BF16(k), Weights::BF16(v)) => run(q, sizes, (&keys, k), (&values, v), masked),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Sizes {
    batch: usize,
    heads: usize,
    head_dim: usize,
    kv_heads: usize,
    len: usize,
}

fn run<E: Avx2Element>(
    q: &[f32],
    sizes: Sizes,
    (keys, k_data): (&CacheView<'_>, &[E]),
    (values, v_data): (&CacheView<'_>, &[E]),
    masked: Option<&[bool]>,
) -> Option<Vec<f32>> {
    let Sizes {
        batch,
        heads,
        head_dim,
        kv_heads,
        len,
    } = sizes;
    if batch == 0
        || kv_heads == 0
        || len == 0
        || head_dim == 0
        || !heads.is_multiple_of(kv_heads)
        || q.len() != batch * heads * head_dim
        || masked.is_some_and(|m| m.len() != batch * heads * len)
    {
        return None;
    }
    let group = heads / kv_heads;
    let mut heads_kv = Vec::with_capacity(batch * kv_heads);
    for b in 0..batch {
        for h in 0..kv_heads {
            heads_kv.push((
                head(keys, k_data, (b, h), len, head_dim)?,
                head(values, v_data, (b, h), len, head_dim)?,
            ));
        }
    }
    let isa = Isa::detect();
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    // Task (b, h) owns query heads h·group .. (h+1)·group of batch row b: one contiguous run.
    out.par_chunks_mut(group * head_dim)
        .zip(q.par_chunks(group * head_dim))
        .zip(heads_kv.par_iter())
        .enumerate()
        .for_each(|(task, ((out, q), &(k, v)))| {
            let first = task * group;
            let mut scores = vec![0f32; group * len];
            let mut dots = [0f32; GROUP];
            for g0 in (0..group).step_by(GROUP) {
                let rows: Vec<&[f32]> = q[g0 * head_dim..]
                    .chunks_exact(head_dim)
                    .take(GROUP.min(group - g0))
                    .collect();
                for (s, key) in k.chunks_exact(head_dim).enumerate() {
                    dot_group(isa, key, &rows, &mut dots[..rows.len()]);
                    for (r, d) in dots[..rows.len()].iter().enumerate() {
                        scores[(g0 + r) * len + s] = *d;
                    }
                }
            }
            for (r, row) in scores.chunks_exact_mut(len).enumerate() {
                if let Some(m) = masked {
                    let m = &m[(first + r) * len..(first + r + 1) * len];
                    for (v, hide) in row.iter_mut().zip(m) {
                        if *hide {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                }
                softmax_row(isa, row, scale);
            }
            let probs: Vec<&[f32]> = scores.chunks_exact(len).collect();
            for (g0, p) in probs.chunks(GROUP).enumerate() {
                let acc = &mut out[g0 * GROUP * head_dim..(g0 * GROUP + p.len()) * head_dim];
                axpy_group(isa, v, head_dim, 0, head_dim, p, acc);
            }
        });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;
    use half::{bf16, f16};

    /// f64 attention over a `[batch, kv_heads, capacity, head_dim]` buffer.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        batch: usize,
        heads: usize,
        kv_heads: usize,
        cap: usize,
        len: usize,
        d: usize,
        masked: Option<&[bool]>,
    ) -> Vec<f64> {
        let mut out = vec![0f64; batch * heads * d];
        for b in 0..batch {
            for h in 0..heads {
                let kh = h / (heads / kv_heads);
                let base = (b * kv_heads + kh) * cap * d;
                let qr = &q[(b * heads + h) * d..(b * heads + h + 1) * d];
                let mut s: Vec<f64> = (0..len)
                    .map(|j| {
                        let kr = &k[base + j * d..base + (j + 1) * d];
                        qr.iter()
                            .zip(kr)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                if let Some(m) = masked {
                    for (j, v) in s.iter_mut().enumerate() {
                        if m[(b * heads + h) * len + j] {
                            *v = f64::NEG_INFINITY;
                        }
                    }
                }
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    for c in 0..d {
                        out[(b * heads + h) * d + c] += p / sum * v[base + j * d + c] as f64;
                    }
                }
            }
        }
        out
    }

    fn view(data: Weights<'_>, kv_heads: usize, cap: usize, d: usize) -> CacheView<'_> {
        CacheView {
            data,
            offset: 0,
            batch_stride: kv_heads * cap * d,
            head_stride: cap * d,
        }
    }

    #[test]
    fn matches_f64_for_gqa_masks_and_every_element_type() {
        // 6 query heads over 2 kv heads (groups of 3), 2 batch rows, 13 of 16 positions used,
        // head_dim 20 (not a multiple of the vector width).
        let (batch, heads, kv_heads, cap, len, d) = (2, 6, 2, 16, 13, 20);
        let q = values(batch * heads * d, 1);
        let k = values(batch * kv_heads * cap * d, 2);
        let v = values(batch * kv_heads * cap * d, 3);
        let masked: Vec<bool> = (0..batch * heads * len).map(|i| i % 5 == 1).collect();
        for mask in [None, Some(&masked[..])] {
            let want = reference(&q, &k, &v, batch, heads, kv_heads, cap, len, d, mask);
            let (kv, vv) = (
                view(Weights::F32(&k), kv_heads, cap, d),
                view(Weights::F32(&v), kv_heads, cap, d),
            );
            let got = cached_attention(&q, batch, heads, d, kv, vv, kv_heads, len, mask).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
            }
            // Half-precision caches: the reference sees the same rounded values.
            let k16: Vec<f16> = k.iter().map(|x| f16::from_f32(*x)).collect();
            let v16: Vec<f16> = v.iter().map(|x| f16::from_f32(*x)).collect();
            let kb: Vec<bf16> = k.iter().map(|x| bf16::from_f32(*x)).collect();
            let vb: Vec<bf16> = v.iter().map(|x| bf16::from_f32(*x)).collect();
            let halves = [
                (Weights::F16(&k16), Weights::F16(&v16)),
                (Weights::BF16(&kb), Weights::BF16(&vb)),
            ];
            for (kh, vh) in halves {
                let widen = |w: Weights<'_>| -> Vec<f32> {
                    match w {
                        Weights::F16(x) => x.iter().map(|h| h.to_f32()).collect(),
                        Weights::BF16(x) => x.iter().map(|h| h.to_f32()).collect(),
                        Weights::F32(x) => x.to_vec(),
                    }
                };
                let want = reference(
                    &q,
                    &widen(kh),
                    &widen(vh),
                    batch,
                    heads,
                    kv_heads,
                    cap,
                    len,
                    d,
                    mask,
                );
                let (kv, vv) = (view(kh, kv_heads, cap, d), view(vh, kv_heads, cap, d));
                let got =
                    cached_attention(&q, batch, heads, d, kv, vv, kv_heads, len, mask).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn refuses_sizes_that_do_not_fit() {
        let (d, cap) = (4, 3);
        let q = values(2 * d, 1);
        let k = values(2 * cap * d, 2);
        let kv = view(Weights::F32(&k), 2, cap, d);
        // Three heads over two kv heads; then a length past the buffer.
        assert!(cached_attention(&q, 1, 3, d, kv, kv, 2, 2, None).is_none());
        assert!(cached_attention(&q, 1, 2, d, kv, kv, 2, 4, None).is_none());
        assert!(cached_attention(&q, 1, 2, d, kv, kv, 2, 3, Some(&[false; 5])).is_none());
        assert!(cached_attention(&q, 1, 2, d, kv, kv, 2, 3, None).is_some());
        let k16: Vec<f16> = k.iter().map(|x| f16::from_f32(*x)).collect();
        let mixed = view(Weights::F16(&k16), 2, cap, d);
        assert!(cached_attention(&q, 1, 2, d, kv, mixed, 2, 3, None).is_none());
    }
}
