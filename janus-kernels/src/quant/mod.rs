//! Block-quantised weights: GGML's Q8_0 and Q4_K, byte for byte, and their few-row products.
//!
//! A [`QuantMatrix`] holds an `[out, in]` weight whose rows were quantised independently, each
//! row a run of blocks laid out exactly as in a GGUF file (so its bytes can be written as they
//! are). Decoding multiplies one to four activation rows by it with [`QuantMatrix::matmul_rows`]:
//! each activation row is quantised to int8 blocks once per call and every weight block is
//! reduced with integer multiply-adds (AVX-512 VNNI, AVX2 or a portable loop, chosen at run
//! time). Prefill dequantises panels of rows into f32 ([`QuantMatrix::dequantize_rows_into`])
//! for the f32 GEMM.
//!
//! The formats, the checks against GGML and the measurements are in docs/quantization.md.

mod dot;
mod q4_k;
mod q8_0;

pub use dot::{MAX_QUANT_ROWS, QuantIsa};

use half::f16;
use rayon::prelude::*;
use std::ops::Range;

use crate::kernels::batch::{BatchWeight, MAX_BATCH_ROWS, batch_matmul_t};
use crate::kernels::sgemm::{PANEL_VALUES, widened_product};

/// A GGML block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantKind {
    /// 32 values per 34-byte block: an f16 scale `d = amax / 127` and 32 int8 `round(x / d)`.
    Q8_0,
    /// 256 values per 144-byte super-block: f16 `d` and `dmin`, eight 6-bit sub-block scales and
    /// mins packed in 12 bytes, and 256 4-bit quants; `x ≈ d·sc·q − dmin·m` per sub-block of 32.
    Q4K,
}

impl QuantKind {
    /// Values per block.
    pub const fn block_values(self) -> usize {
        match self {
            QuantKind::Q8_0 => q8_0::QK,
            QuantKind::Q4K => q4_k::QK,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantKind::Q8_0 => q8_0::BLOCK_BYTES,
            QuantKind::Q4K => q4_k::BLOCK_BYTES,
        }
    }

    /// GGML's name for the format (`"q8_0"`, `"q4_K"`), as GGUF tools print it.
    pub const fn name(self) -> &'static str {
        match self {
            QuantKind::Q8_0 => "q8_0",
            QuantKind::Q4K => "q4_K",
        }
    }

    /// The format GGML names `name` ([`QuantKind::name`]).
    pub fn from_name(name: &str) -> Option<QuantKind> {
        [QuantKind::Q8_0, QuantKind::Q4K]
            .into_iter()
            .find(|k| k.name() == name)
    }

    /// GGML's type id (`ggml_type`), the number a GGUF tensor header stores.
    pub const fn ggml_type(self) -> u32 {
        match self {
            QuantKind::Q8_0 => 8,
            QuantKind::Q4K => 12,
        }
    }

    /// Bytes of one quantised row of `cols` values, or an error when `cols` is not a whole
    /// number of blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize, QuantError> {
        if cols == 0 || !cols.is_multiple_of(self.block_values()) {
            return Err(QuantError::Width { kind: self, cols });
        }
        Ok(cols / self.block_values() * self.block_bytes())
    }

    /// The format to store rows of `cols` values in when `self` is wanted: Q4_K needs whole
    /// super-blocks of 256 and falls back to Q8_0 otherwise (as llama.cpp does for such
    /// tensors); Q8_0 needs a multiple of 32 and has no fallback.
    pub fn for_row_width(self, cols: usize) -> Result<QuantKind, QuantError> {
        match self {
            QuantKind::Q4K if self.row_bytes(cols).is_err() => QuantKind::Q8_0.for_row_width(cols),
            kind => kind.row_bytes(cols).map(|_| kind),
        }
    }
}

impl std::fmt::Display for QuantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a matrix could not be quantised, rebuilt or multiplied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// The row width is not a whole number of the format's blocks.
    #[error("rows of {cols} values are not whole {kind} blocks of {} values", kind.block_values())]
    Width {
        /// The format asked for.
        kind: QuantKind,
        /// The row width.
        cols: usize,
    },
    /// A slice does not hold the number of values or bytes the dimensions call for.
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        /// Which argument.
        what: &'static str,
        /// Elements the dimensions call for.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// An input value is NaN or infinite.
    #[error("{what} holds a non-finite value at row {row}, column {col}")]
    NonFinite {
        /// Which argument.
        what: &'static str,
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
    },
    /// A block's scale does not fit in an f16 (the values are too large for the format).
    #[error(
        "row {row}, block {block}: the block scale overflows f16 (values too large for {kind})"
    )]
    ScaleOverflow {
        /// The format.
        kind: QuantKind,
        /// The row.
        row: usize,
        /// The block within the row.
        block: usize,
    },
    /// A rebuilt matrix's bytes hold a NaN or infinite f16 scale.
    #[error("row {row}, block {block}: stored scale is not finite")]
    BadScale {
        /// The row.
        row: usize,
        /// The block within the row.
        block: usize,
    },
    /// The number of activation rows is 0 or above [`MAX_QUANT_ROWS`].
    #[error("{rows} activation rows: the products take 1 to {MAX_QUANT_ROWS}")]
    Rows {
        /// Rows given.
        rows: usize,
    },
    /// A row range reaches past the matrix.
    #[error("rows {start}..{end} of a matrix with {rows} rows")]
    RowRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Rows in the matrix.
        rows: usize,
    },
}

/// An `[out, in]` weight quantised row by row into GGML blocks.
///
/// `bytes` is `rows` quantised rows back to back, each [`QuantKind::row_bytes`] long: the same
/// bytes a GGUF tensor of this type and shape holds (GGUF names the shape `[cols, rows]`).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    kind: QuantKind,
    bytes: Vec<u8>,
}

impl QuantMatrix {
    /// Quantises `rows` rows of `cols` values (row-major `data`, `[out, in]`) into `kind`, as
    /// GGML's reference quantisers do (`quantize_row_q8_0_ref`, `quantize_row_q4_K_ref`: no
    /// importance matrix). Rows are quantised in parallel.
    ///
    /// Refuses non-finite values and values whose block scale overflows f16 (magnitudes beyond
    /// about 8·10⁶ for Q8_0 and 4·10⁶ for Q4_K). Use [`QuantKind::for_row_width`] first to fall
    /// back from Q4_K where `cols` is not a multiple of 256.
    pub fn quantize(
        kind: QuantKind,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<QuantMatrix, QuantError> {
        let row_bytes = kind.row_bytes(cols)?;
        check_len("data", rows * cols, data.len())?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite {
                what: "data",
                row: i / cols,
                col: i % cols,
            });
        }
        let mut bytes = vec![0u8; rows * row_bytes];
        bytes
            .par_chunks_mut(row_bytes)
            .zip(data.par_chunks(cols))
            .enumerate()
            .try_for_each(|(row, (out, x))| {
                let overflow = match kind {
                    QuantKind::Q8_0 => q8_0::quantize_row(x, out),
                    QuantKind::Q4K => q4_k::quantize_row(x, out),
                };
                match overflow {
                    Some(block) => Err(QuantError::ScaleOverflow { kind, row, block }),
                    None => Ok(()),
                }
            })?;
        Ok(QuantMatrix {
            rows,
            cols,
            kind,
            bytes,
        })
    }

    /// Rebuilds a matrix from stored bytes (as [`QuantMatrix::bytes`] gave them, or a GGUF
    /// tensor's data). Checks the length and that every f16 scale is finite, so products of a
    /// rebuilt matrix stay finite for finite inputs.
    pub fn from_bytes(
        kind: QuantKind,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<QuantMatrix, QuantError> {
        let row_bytes = kind.row_bytes(cols)?;
        check_len("bytes", rows * row_bytes, bytes.len())?;
        // Every block starts with its f16 scale(s): d (Q8_0), d and dmin (Q4_K).
        let scales = match kind {
            QuantKind::Q8_0 => 1,
            QuantKind::Q4K => 2,
        };
        for (b, block) in bytes.chunks_exact(kind.block_bytes()).enumerate() {
            for s in 0..scales {
                if !f16::from_le_bytes([block[2 * s], block[2 * s + 1]]).is_finite() {
                    let per_row = cols / kind.block_values();
                    return Err(QuantError::BadScale {
                        row: b / per_row,
                        block: b % per_row,
                    });
                }
            }
        }
        Ok(QuantMatrix {
            rows,
            cols,
            kind,
            bytes,
        })
    }

    /// Output rows (`out`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row (`in`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The block format.
    pub fn kind(&self) -> QuantKind {
        self.kind
    }

    /// The quantised rows back to back, as stored.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The quantised bytes, giving up the matrix.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Bytes of one quantised row.
    pub fn row_bytes(&self) -> usize {
        self.bytes.len().checked_div(self.rows).unwrap_or(0)
    }

    /// Row `row` as f32 values (GGML's `dequantize_row_*`, bit for bit).
    pub fn dequantize_row(&self, row: usize) -> Result<Vec<f32>, QuantError> {
        self.dequantize_rows(row..row + 1)
    }

    /// Rows `rows` as a row-major f32 panel.
    pub fn dequantize_rows(&self, rows: Range<usize>) -> Result<Vec<f32>, QuantError> {
        let mut out = vec![0f32; rows.len() * self.cols];
        self.dequantize_rows_into(rows, &mut out)?;
        Ok(out)
    }

    /// Rows `rows` into `out` (`rows.len() · cols` values, row-major), on all threads: the
    /// panel a prefill step hands to the f32 GEMM, written into the caller's scratch.
    pub fn dequantize_rows_into(
        &self,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        if rows.start > rows.end || rows.end > self.rows {
            return Err(QuantError::RowRange {
                start: rows.start,
                end: rows.end,
                rows: self.rows,
            });
        }
        check_len("out", rows.len() * self.cols, out.len())?;
        if rows.is_empty() {
            return Ok(());
        }
        let rb = self.row_bytes();
        let src = &self.bytes[rows.start * rb..rows.end * rb];
        let kind = self.kind;
        out.par_chunks_mut(self.cols)
            .zip(src.par_chunks(rb))
            .for_each(|(y, q)| dequantize_row(kind, q, y));
        Ok(())
    }

    /// `y = x · Wᵀ` for `m` activation rows `x` (`[m, cols]`, row-major, `1 ≤ m ≤`
    /// [`MAX_QUANT_ROWS`]): `y[r][n] = Σ_k x[r][k] · W[n][k]`, `[m, rows]` row-major.
    ///
    /// Each activation row is quantised once to int8 blocks (Q8_0-like blocks of 32 with an f32
    /// scale against Q8_0 weights, GGML's Q8_K against Q4_K), so the result differs from the
    /// product with the dequantised weights by that rounding: at most `Σ_k |W[n][k]| · δ_k / 2`
    /// where `δ_k` is the activation's block scale (`amax / 127`).
    pub fn matmul_rows(&self, x: &[f32], m: usize) -> Result<Vec<f32>, QuantError> {
        self.matmul_rows_with(QuantIsa::detect(), x, m)
    }

    /// [`QuantMatrix::matmul_rows`] with the instruction set chosen by the caller (tests and
    /// measurements compare them). Asking for one the CPU lacks falls back to the best it has
    /// below it. All paths give the same bits.
    pub fn matmul_rows_with(
        &self,
        isa: QuantIsa,
        x: &[f32],
        m: usize,
    ) -> Result<Vec<f32>, QuantError> {
        if m == 0 || m > MAX_QUANT_ROWS {
            return Err(QuantError::Rows { rows: m });
        }
        check_len("x", m * self.cols, x.len())?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite {
                what: "x",
                row: i / self.cols,
                col: i % self.cols,
            });
        }
        Ok(dot::matmul(isa.supported(), self, x, m))
    }
}

impl QuantMatrix {
    /// `y = x · Wᵀ` for any number of rows `m` (`x` is `[m, cols]`, row-major; `y` is
    /// `[m, rows]`): the integer kernels of [`QuantMatrix::matmul_rows`] for 1 to
    /// [`MAX_QUANT_ROWS`] finite rows (decoding); up to [`crate::MAX_BATCH_ROWS`] rows (a short
    /// prompt, 16 images' CFG rows) the f32 batch kernel over the weight dequantised a few rows
    /// at a time into a per-task buffer; more rows (prefill) the weight dequantised into f32
    /// scratch (in panels of rows for the largest weights) and multiplied by the f32 GEMM. A row
    /// holding a NaN or infinity takes the f32 paths, where it propagates as in an f32 product.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Result<Vec<f32>, QuantError> {
        check_len("x", m * self.cols, x.len())?;
        if m == 0 || self.rows == 0 {
            return Ok(vec![0f32; m * self.rows]);
        }
        if m <= MAX_QUANT_ROWS && x.iter().all(|v| v.is_finite()) {
            return Ok(dot::matmul(QuantIsa::detect(), self, x, m));
        }
        if m <= MAX_BATCH_ROWS {
            let widen = |rows: Range<usize>, out: &mut [f32]| {
                let rb = self.row_bytes();
                let src = &self.bytes[rows.start * rb..rows.end * rb];
                for (y, q) in out.chunks_exact_mut(self.cols).zip(src.chunks_exact(rb)) {
                    dequantize_row(self.kind, q, y);
                }
                true
            };
            let weight = BatchWeight::Widen(&widen);
            if let Some(y) = batch_matmul_t(x, m, self.cols, &weight, self.rows) {
                return Ok(y);
            }
        }
        self.dequantized_product(x, m, (PANEL_VALUES / self.cols).max(64))
    }

    /// `x · Wᵀ` by the f32 GEMM over the weight dequantised `panel` rows at a time.
    fn dequantized_product(
        &self,
        x: &[f32],
        m: usize,
        panel: usize,
    ) -> Result<Vec<f32>, QuantError> {
        let widen = |rows: Range<usize>, out: &mut [f32]| self.dequantize_rows_into(rows, out);
        widened_product(x, m, self.cols, self.rows, panel, widen)
    }
}

/// One row of `kind` blocks as f32.
fn dequantize_row(kind: QuantKind, q: &[u8], y: &mut [f32]) {
    match kind {
        QuantKind::Q8_0 => q8_0::dequantize_row(q, y),
        QuantKind::Q4K => q4_k::dequantize_row(q, y),
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), QuantError> {
    if expected == got {
        Ok(())
    } else {
        Err(QuantError::Length {
            what,
            expected,
            got,
        })
    }
}

/// GGML's `nearest_int`: round half to even by adding 1.5·2²³, for |v| ≤ 2²²; larger values
/// saturate there instead of wrapping (GGML asserts they never occur).
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let v = v.clamp(-4194303.0, 4194303.0);
    ((v + 12582912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

#[cfg(test)]
pub(crate) mod test_util {
    /// Deterministic, roughly Gaussian values (sum of four uniforms) with scale `scale`.
    pub(crate) fn gaussian(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut uniform = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n)
            .map(|_| (uniform() + uniform() + uniform() + uniform()) * scale * 1.7)
            .collect()
    }

    /// `x · Wᵀ` in f64.
    pub(crate) fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                y[r * n + j] = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[j * k + i] as f64)
                    .sum();
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even_like_ggml() {
        for (v, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (0.49999997, 0),
            (3.7, 4),
            (-3.7, -4),
            (126.5, 126),
            (4194303.0, 4194303),
            (1e9, 4194303),
            (-1e9, -4194303),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn widths_fall_back_from_q4_k_to_q8_0_and_refuse_partial_blocks() {
        assert_eq!(QuantKind::Q4K.for_row_width(2048), Ok(QuantKind::Q4K));
        assert_eq!(QuantKind::Q4K.for_row_width(128), Ok(QuantKind::Q8_0));
        assert_eq!(QuantKind::Q4K.for_row_width(5632 + 32), Ok(QuantKind::Q8_0));
        assert_eq!(QuantKind::Q8_0.for_row_width(128), Ok(QuantKind::Q8_0));
        assert!(matches!(
            QuantKind::Q4K.for_row_width(100),
            Err(QuantError::Width {
                kind: QuantKind::Q8_0,
                cols: 100
            })
        ));
        assert!(QuantKind::Q8_0.for_row_width(0).is_err());
        assert_eq!(QuantKind::Q8_0.row_bytes(64), Ok(68));
        assert_eq!(QuantKind::Q4K.row_bytes(512), Ok(288));
        assert!(QuantMatrix::quantize(QuantKind::Q4K, &[0.0; 128], 1, 128).is_err());
    }

    #[test]
    fn bad_inputs_are_refused_with_typed_errors() {
        let mut x = gaussian(2 * 64, 1, 1.0);
        assert!(matches!(
            QuantMatrix::quantize(QuantKind::Q8_0, &x[..100], 2, 64),
            Err(QuantError::Length { .. })
        ));
        x[70] = f32::NAN;
        assert_eq!(
            QuantMatrix::quantize(QuantKind::Q8_0, &x, 2, 64),
            Err(QuantError::NonFinite {
                what: "data",
                row: 1,
                col: 6
            })
        );
        x[70] = f32::INFINITY;
        assert!(QuantMatrix::quantize(QuantKind::Q8_0, &x, 2, 64).is_err());
        x[70] = 1e7 * 127.0;
        assert_eq!(
            QuantMatrix::quantize(QuantKind::Q8_0, &x, 2, 64),
            Err(QuantError::ScaleOverflow {
                kind: QuantKind::Q8_0,
                row: 1,
                block: 0
            })
        );
        let mut big = gaussian(256, 2, 1.0);
        big[3] = 1e9;
        assert!(matches!(
            QuantMatrix::quantize(QuantKind::Q4K, &big, 1, 256),
            Err(QuantError::ScaleOverflow { .. })
        ));

        let w = QuantMatrix::quantize(QuantKind::Q8_0, &gaussian(3 * 64, 3, 1.0), 3, 64).unwrap();
        assert_eq!(
            w.matmul_rows(&[0.0; 64], 0),
            Err(QuantError::Rows { rows: 0 })
        );
        assert_eq!(
            w.matmul_rows(&[0.0; 64 * 5], 5),
            Err(QuantError::Rows { rows: 5 })
        );
        assert!(matches!(
            w.matmul_rows(&[0.0; 63], 1),
            Err(QuantError::Length { .. })
        ));
        let mut xa = vec![0.5f32; 128];
        xa[127] = f32::NAN;
        assert_eq!(
            w.matmul_rows(&xa, 2),
            Err(QuantError::NonFinite {
                what: "x",
                row: 1,
                col: 63
            })
        );
        assert!(matches!(
            w.dequantize_rows(2..4),
            Err(QuantError::RowRange { .. })
        ));
        assert!(w.dequantize_rows(3..3).unwrap().is_empty());
        let mut short = vec![0f32; 10];
        assert!(w.dequantize_rows_into(0..1, &mut short).is_err());

        let mut bytes = w.bytes().to_vec();
        assert!(QuantMatrix::from_bytes(QuantKind::Q8_0, 3, 64, bytes[..100].to_vec()).is_err());
        // Row 1, block 1's scale set to +inf.
        bytes[68 + 34..68 + 36].copy_from_slice(&f16::INFINITY.to_le_bytes());
        assert_eq!(
            QuantMatrix::from_bytes(QuantKind::Q8_0, 3, 64, bytes),
            Err(QuantError::BadScale { row: 1, block: 1 })
        );
    }

    #[test]
    fn bytes_round_trip_through_from_bytes() {
        for kind in [QuantKind::Q8_0, QuantKind::Q4K] {
            let (rows, cols) = (5, 512);
            let w =
                QuantMatrix::quantize(kind, &gaussian(rows * cols, 9, 0.02), rows, cols).unwrap();
            assert_eq!(w.bytes().len(), rows * kind.row_bytes(cols).unwrap());
            assert_eq!(w.row_bytes(), kind.row_bytes(cols).unwrap());
            let back = QuantMatrix::from_bytes(kind, rows, cols, w.bytes().to_vec()).unwrap();
            assert_eq!(back, w);
            let panel = w.dequantize_rows(1..4).unwrap();
            for r in 1..4 {
                assert_eq!(
                    &panel[(r - 1) * cols..r * cols],
                    &w.dequantize_row(r).unwrap()[..]
                );
            }
        }
    }

    #[test]
    fn matmul_t_takes_any_row_count_and_matches_the_dequantised_product() {
        let (n, k) = (300, 512);
        for kind in [QuantKind::Q8_0, QuantKind::Q4K] {
            let w = QuantMatrix::quantize(kind, &gaussian(n * k, 11, 0.02), n, k).unwrap();
            let deq = w.dequantize_rows(0..n).unwrap();
            // 5 and 17 rows take the batch kernel, 129 the GEMM.
            for m in [1usize, 3, 4, 5, 17, MAX_BATCH_ROWS + 1] {
                let x = gaussian(m * k, 12 + m as u64, 1.0);
                let y = w.matmul_t(&x, m).unwrap();
                let want = reference(&x, m, &deq, n, k);
                for (r, (g, e)) in y.iter().zip(&want).enumerate() {
                    // Up to 4 rows the activations are rounded to int8 blocks too.
                    let tol = if m <= MAX_QUANT_ROWS { 0.05 } else { 1e-4 };
                    assert!(
                        (*g as f64 - e).abs() <= tol * (1.0 + e.abs()),
                        "{kind} m={m} [{r}]: {g} vs {e}"
                    );
                }
                if m <= MAX_QUANT_ROWS {
                    assert_eq!(y, w.matmul_rows(&x, m).unwrap());
                }
                // Panels of 64 rows (the last one ragged), as the largest weights go.
                let y = w.dequantized_product(&x, m, 64).unwrap();
                for (r, (g, e)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{kind} m={m} in panels [{r}]: {g} vs {e}"
                    );
                }
            }
            let mut x = gaussian(2 * k, 5, 1.0);
            x[k + 7] = f32::NAN;
            let y = w.matmul_t(&x, 2).unwrap();
            assert!(y[..n].iter().all(|v| v.is_finite()));
            assert!(y[n..].iter().all(|v| v.is_nan()), "a NaN row stays NaN");
            assert!(w.matmul_t(&x[..k + 1], 1).is_err());
            assert!(w.matmul_t(&[], 0).unwrap().is_empty());
        }
    }

    #[test]
    fn zero_row_matrices_are_empty() {
        let w = QuantMatrix::quantize(QuantKind::Q4K, &[], 0, 256).unwrap();
        assert!(w.bytes().is_empty());
        assert_eq!(w.row_bytes(), 0);
        assert_eq!(w.matmul_rows(&[1.0; 256], 1).unwrap(), Vec::<f32>::new());
        assert!(w.dequantize_rows(0..0).unwrap().is_empty());
    }
}
