use burn::tensor::{Bool, DType, Device, Tensor, TensorData};

use crate::LlmError;

/// Keys and values of one layer, preallocated to the cache capacity.
#[derive(Debug, Default)]
pub(crate) struct LayerKv {
    /// `[B, H_kv, capacity, head_dim]` each, allocated on the first write.
    buffers: Option<(Tensor<4>, Tensor<4>)>,
    /// Element type of the buffers (`None`: the keys' dtype).
    dtype: Option<DType>,
}

impl LayerKv {
    /// Writes `k`, `v` at positions `start..start+T` and returns views of `0..start+T`.
    ///
    /// The buffers are written in place (`Tensor::inplace`), so a decode step copies only the
    /// new entries, never the whole cache.
    pub(crate) fn append(
        &mut self,
        k: Tensor<4>,
        v: Tensor<4>,
        start: usize,
        capacity: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let [b, h, t, d] = k.dims();
        let (k, v) = match self.dtype {
            Some(dtype) if dtype != k.dtype() => (k.cast(dtype), v.cast(dtype)),
            _ => (k, v),
        };
        let (kb, vb) = self.buffers.get_or_insert_with(|| {
            let opts = (&k.device(), k.dtype());
            (
                Tensor::empty([b, h, capacity, d], opts),
                Tensor::empty([b, h, capacity, d], opts),
            )
        });
        let end = start + t;
        kb.inplace(|c| c.slice_assign([0..b, 0..h, start..end, 0..d], k));
        vb.inplace(|c| c.slice_assign([0..b, 0..h, start..end, 0..d], v));
        (
            kb.clone().slice([0..b, 0..h, 0..end, 0..d]),
            vb.clone().slice([0..b, 0..h, 0..end, 0..d]),
        )
    }
}

/// A key/value cache for batched incremental decoding.
///
/// Rows may be left-padded: the cache remembers which key positions of each row are real
/// tokens, so later steps keep masking the padding, and it tracks each row's next position id
/// (`cumsum(mask) − 1` continued). Buffers are preallocated to `capacity` positions.
#[derive(Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    batch: usize,
    capacity: usize,
    /// `valid[b][j]`: key position `j` of row `b` is a real token (not padding).
    valid: Vec<Vec<bool>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers, `batch` rows and up to `capacity` positions.
    pub fn new(num_layers: usize, batch: usize, capacity: usize) -> Self {
        Self {
            layers: (0..num_layers).map(|_| LayerKv::default()).collect(),
            batch,
            capacity,
            valid: vec![Vec::with_capacity(capacity); batch],
            len: 0,
        }
    }

    /// Stores keys and values as `dtype` (by default they keep the dtype the layers give them,
    /// f32). Half-precision storage halves the cache and what a step reads from it.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        for layer in &mut self.layers {
            layer.dtype = Some(dtype);
        }
        self
    }

    /// Positions filled so far (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows of the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Maximum number of positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every entry; the buffers are kept for reuse.
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Keeps only the first `len` positions (e.g. to re-run from a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        let len = len.min(self.len);
        for row in &mut self.valid {
            row.truncate(len);
        }
        self.len = len;
    }

    /// The next position id of each row: the number of real tokens it has seen.
    pub fn next_positions(&self) -> Vec<i64> {
        self.valid
            .iter()
            .map(|row| row.iter().filter(|v| **v).count() as i64)
            .collect()
    }

    /// Checks that `t` more positions for `b` rows fit.
    pub(crate) fn check_room(&self, b: usize, t: usize) -> Result<(), LlmError> {
        if b != self.batch {
            return Err(LlmError::BatchMismatch {
                expected: self.batch,
                found: b,
            });
        }
        if self.len + t > self.capacity {
            return Err(LlmError::CacheFull {
                capacity: self.capacity,
                needed: self.len + t,
            });
        }
        Ok(())
    }

    /// Records `t` new positions with their validity (`None` = all real) and advances.
    pub(crate) fn push(&mut self, mask: Option<&[Vec<bool>]>, t: usize) {
        for (b, row) in self.valid.iter_mut().enumerate() {
            match mask {
                Some(m) => row.extend_from_slice(&m[b]),
                None => row.extend(std::iter::repeat_n(true, t)),
            }
        }
        self.len += t;
    }

    pub(crate) fn valid(&self) -> &[Vec<bool>] {
        &self.valid
    }
}

/// Builds the boolean attention mask (`true` = masked) for `t` queries starting at key position
/// `past`, over `past + t` keys with per-row validity `valid`. Returns `None` when the plain
/// causal rule is enough.
///
/// A padded query would otherwise see no key at all and produce NaN, which then leaks into
/// real rows through `0·NaN` in the value product; it is allowed to see itself instead.
pub(crate) fn attention_mask(
    valid: &[Vec<bool>],
    past: usize,
    t: usize,
    heads: usize,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let keys = past + t;
    if valid.iter().all(|row| row[..keys].iter().all(|v| *v)) {
        return None;
    }
    let b = valid.len();
    let mut data = Vec::with_capacity(b * t * keys);
    for row in valid {
        for i in 0..t {
            let q = past + i;
            data.extend((0..keys).map(|j| j > q || (!row[j] && j != q)));
        }
    }
    let mask = Tensor::<4, Bool>::from_data(TensorData::new(data, [b, 1, t, keys]), device);
    Some(mask.expand([b, heads, t, keys]))
}
