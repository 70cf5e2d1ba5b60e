//! Few-row products with quantised weights: integer dot products per block, f32 between blocks.
//!
//! Every path computes each block's integer sum exactly and combines the sums in f32 in the same
//! order with the same operations (never fused), so the portable loop, AVX2 and AVX-512 give the
//! same bits. Q8_0 products accumulate block `b` into lane `b mod 8` of eight partial sums (the
//! lanes of one AVX register) and add the lanes in a fixed tree; Q4_K products add one term per
//! super-block in order.

use super::q4_k::{self, Q8KRow, scales_mins};
use super::q8_0::{self, Q8Row};
use super::{QuantKind, QuantMatrix};
use half::f16;
use rayon::prelude::*;

/// The most activation rows one product takes (decode, the CFG pair, two CFG pairs).
pub const MAX_QUANT_ROWS: usize = 4;

/// Which instructions the quantised products use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuantIsa {
    /// Plain Rust, vectorised as far as the compiler manages for the build target.
    Portable,
    /// AVX2 (`vpmaddubsw`/`vpmaddwd`) and F16C.
    Avx2,
    /// AVX-512 BW and VNNI on top of AVX2: `vpdpbusd` for Q8_0, 512-bit `vpmaddubsw` for Q4_K.
    Avx512Vnni,
}

impl QuantIsa {
    /// The best this CPU supports.
    pub fn detect() -> QuantIsa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni") {
                    return QuantIsa::Avx512Vnni;
                }
                return QuantIsa::Avx2;
            }
        }
        QuantIsa::Portable
    }

    /// `self`, or the best this CPU supports if that is less.
    pub fn supported(self) -> QuantIsa {
        self.min(QuantIsa::detect())
    }
}

/// Activation rows quantised for one weight format.
enum Acts {
    Q8(Vec<Q8Row>),
    Q8K(Vec<Q8KRow>),
}

/// `x · Wᵀ` for `m` checked, finite rows; `isa` is supported by this CPU.
pub(super) fn matmul(isa: QuantIsa, w: &QuantMatrix, x: &[f32], m: usize) -> Vec<f32> {
    let (n, cols) = (w.rows, w.cols);
    if n == 0 {
        return Vec::new();
    }
    let acts = match w.kind {
        QuantKind::Q8_0 => Acts::Q8(
            x.chunks_exact(cols)
                .map(q8_0::quantize_activation)
                .collect(),
        ),
        QuantKind::Q4K => Acts::Q8K(
            x.chunks_exact(cols)
                .map(q4_k::quantize_activation)
                .collect(),
        ),
    };
    let rb = w.row_bytes();
    // Results gathered output-major ([n, m]) so each piece writes one contiguous run, split as
    // the f32 few-row products split their weights.
    let mut t = vec![0f32; n * m];
    let per_piece = n
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .max((16 * 1024) / rb)
        .max(1);
    t.par_chunks_mut(per_piece * m)
        .enumerate()
        .for_each(|(piece, out)| {
            let first = piece * per_piece;
            for (k, o) in out.chunks_exact_mut(m).enumerate() {
                let j = first + k;
                let row = &w.bytes[j * rb..(j + 1) * rb];
                match &acts {
                    Acts::Q8(a) => q8_0_dot(isa, row, a, o),
                    Acts::Q8K(a) => q4_k_dot(isa, row, a, o),
                }
            }
        });
    if m == 1 {
        return t;
    }
    let mut y = vec![0f32; m * n];
    for (j, o) in t.chunks_exact(m).enumerate() {
        for (r, v) in o.iter().enumerate() {
            y[r * n + j] = *v;
        }
    }
    y
}

/// The eight Q8_0 lanes added in a fixed tree (the same in every path).
#[inline(always)]
fn reduce8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// One Q8_0 block's term: weight scale times activation scale times the integer sum.
#[inline(always)]
fn q8_0_term(dw: f32, da: f32, isum: i32) -> f32 {
    (dw * da) * isum as f32
}

/// One Q4_K super-block's term: `d·da·Σ sc·(q·a) − dmin·da·Σ m·(Σ a)`.
#[inline(always)]
fn q4_k_term(d: f32, dmin: f32, da: f32, isum: i32, imin: i32) -> f32 {
    (d * da) * isum as f32 - (dmin * da) * imin as f32
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q8_0 block `b` of a weight row against activation row `a`, from block `b` on, into `lanes`.
#[inline(always)]
fn q8_0_blocks_portable(w: &[u8], a: &Q8Row, from: usize, lanes: &mut [f32; 8]) {
    let nb = w.len() / q8_0::BLOCK_BYTES;
    for b in from..nb {
        let blk = &w[b * q8_0::BLOCK_BYTES..(b + 1) * q8_0::BLOCK_BYTES];
        let aq = &a.qs[b * q8_0::QK..(b + 1) * q8_0::QK];
        let isum: i32 = blk[2..]
            .iter()
            .zip(aq)
            .map(|(&q, &v)| (q as i8) as i32 * v as i32)
            .sum();
        lanes[b % 8] += q8_0_term(f16_at(blk, 0), a.d[b], isum);
    }
}

/// The eight Q4_K activation sub-block sums times the weight's mins.
#[inline(always)]
fn q4_k_min_sum(m: &[u8; 8], sums: &[i32]) -> i32 {
    m.iter().zip(sums).map(|(&m, &s)| m as i32 * s).sum()
}

fn q8_0_dot(isa: QuantIsa, w: &[u8], a: &[Q8Row], out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        QuantIsa::Avx2 | QuantIsa::Avx512Vnni => x86::q8_0(isa, w, a, out),
        _ => {
            for (r, o) in a.iter().zip(out) {
                let mut lanes = [0f32; 8];
                q8_0_blocks_portable(w, r, 0, &mut lanes);
                *o = reduce8(&lanes);
            }
        }
    }
}

fn q4_k_dot(isa: QuantIsa, w: &[u8], a: &[Q8KRow], out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        QuantIsa::Avx2 | QuantIsa::Avx512Vnni => x86::q4_k(isa, w, a, out),
        _ => {
            for (r, o) in a.iter().zip(out) {
                let mut acc = 0f32;
                for (b, blk) in w.chunks_exact(q4_k::BLOCK_BYTES).enumerate() {
                    let (sc, m) = scales_mins(&blk[4..16]);
                    let aq = &r.qs[b * q4_k::QK..(b + 1) * q4_k::QK];
                    let mut isum = 0i32;
                    for c in 0..4 {
                        let bytes = &blk[16 + 32 * c..16 + 32 * c + 32];
                        let (mut lo, mut hi) = (0i32, 0i32);
                        for (i, &q) in bytes.iter().enumerate() {
                            lo += (q & 0xF) as i32 * aq[64 * c + i] as i32;
                            hi += (q >> 4) as i32 * aq[64 * c + 32 + i] as i32;
                        }
                        isum += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
                    }
                    let imin = q4_k_min_sum(&m, &r.sums[b * 8..b * 8 + 8]);
                    acc += q4_k_term(f16_at(blk, 0), f16_at(blk, 2), r.d[b], isum, imin);
                }
                *o = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Only reached with an [`QuantIsa`] that `QuantIsa::supported` confirmed.

    use super::*;
    use std::arch::x86_64::*;

    pub(super) fn q8_0(isa: QuantIsa, w: &[u8], a: &[Q8Row], out: &mut [f32]) {
        // SAFETY: the CPU has the features of `isa` (checked by the caller through `supported`).
        unsafe {
            match (isa, a.len()) {
                (QuantIsa::Avx512Vnni, 1) => q8_0_vnni::<1>(w, a, out),
                (QuantIsa::Avx512Vnni, 2) => q8_0_vnni::<2>(w, a, out),
                (QuantIsa::Avx512Vnni, 3) => q8_0_vnni::<3>(w, a, out),
                (QuantIsa::Avx512Vnni, _) => q8_0_vnni::<4>(w, a, out),
                (_, 1) => q8_0_avx2::<1>(w, a, out),
                (_, 2) => q8_0_avx2::<2>(w, a, out),
                (_, 3) => q8_0_avx2::<3>(w, a, out),
                (_, _) => q8_0_avx2::<4>(w, a, out),
            }
        }
    }

    pub(super) fn q4_k(isa: QuantIsa, w: &[u8], a: &[Q8KRow], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe {
            // For one or two rows the 256-bit kernel measures faster than the 512-bit one (the
            // fold from 512 to 256 bits costs more than the wider multiply saves), so the
            // 512-bit kernel starts at three rows.
            match (isa, a.len()) {
                (QuantIsa::Avx512Vnni, 3) => q4_k_avx512::<3>(w, a, out),
                (QuantIsa::Avx512Vnni, 4..) => q4_k_avx512::<4>(w, a, out),
                (_, 1) => q4_k_avx2::<1>(w, a, out),
                (_, 2) => q4_k_avx2::<2>(w, a, out),
                (_, 3) => q4_k_avx2::<3>(w, a, out),
                (_, _) => q4_k_avx2::<4>(w, a, out),
            }
        }
    }

    /// Eight vectors of eight i32 to one vector of their eight totals (exact).
    #[inline(always)]
    unsafe fn totals8(v: &[__m256i; 8]) -> __m256i {
        // SAFETY: register arithmetic only; the caller has AVX2.
        unsafe {
            let u0 =
                _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
            let u1 =
                _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
            _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(u0, u1),
                _mm256_permute2x128_si256::<0x31>(u0, u1),
            )
        }
    }

    /// Generates a Q8_0 kernel for `R` activation rows: eight blocks at a time, each block's
    /// `Σ w·a` as eight i32 partial sums from `$dot(|w|, sign(a, w))`, the eight blocks reduced
    /// to one vector, scaled and added to the lanes; the blocks past the last eight as the
    /// portable loop does them.
    macro_rules! q8_0_kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize>(w: &[u8], a: &[Q8Row], out: &mut [f32]) {
                const BB: usize = q8_0::BLOCK_BYTES;
                let nb = w.len() / BB;
                let groups = nb / 8;
                let wp = w.as_ptr();
                let mut lanes = [_mm256_setzero_ps(); R];
                for g in 0..groups {
                    // SAFETY: blocks 8g..8g+8 lie in `w` and their quants in every `a[r]`.
                    unsafe {
                        let mut dh = [0u16; 8];
                        for (b, d) in dh.iter_mut().enumerate() {
                            *d = (wp.add((8 * g + b) * BB) as *const u16).read_unaligned();
                        }
                        let dw = _mm256_cvtph_ps(_mm_loadu_si128(dh.as_ptr() as *const __m128i));
                        for r in 0..R {
                            let ap = a[r].qs.as_ptr().add(8 * g * 32);
                            let mut v = [_mm256_setzero_si256(); 8];
                            for (b, vb) in v.iter_mut().enumerate() {
                                let wq = _mm256_loadu_si256(
                                    wp.add((8 * g + b) * BB + 2) as *const __m256i
                                );
                                let aq = _mm256_loadu_si256(ap.add(32 * b) as *const __m256i);
                                *vb = $dot(_mm256_abs_epi8(wq), _mm256_sign_epi8(aq, wq));
                            }
                            let isum = _mm256_cvtepi32_ps(totals8(&v));
                            let da = _mm256_loadu_ps(a[r].d.as_ptr().add(8 * g));
                            lanes[r] =
                                _mm256_add_ps(lanes[r], _mm256_mul_ps(_mm256_mul_ps(dw, da), isum));
                        }
                    }
                }
                for r in 0..R {
                    let mut l = [0f32; 8];
                    // SAFETY: `l` holds eight f32.
                    unsafe { _mm256_storeu_ps(l.as_mut_ptr(), lanes[r]) };
                    q8_0_blocks_portable(w, &a[r], groups * 8, &mut l);
                    out[r] = reduce8(&l);
                }
            }
        };
    }

    /// `Σ` of adjacent pairs of `u8·i8`, then of adjacent pairs again: eight i32 sums of four.
    #[inline(always)]
    unsafe fn dot_avx2(u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: register arithmetic only; the caller has AVX2. |u·s| ≤ 128·127, so the
        // pairwise i16 sums never saturate.
        unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)) }
    }

    /// The same eight sums of four in one VNNI instruction.
    #[inline(always)]
    unsafe fn dot_vnni(u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: register arithmetic only; the caller has AVX-512 VNNI and VL.
        unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s) }
    }

    q8_0_kernel!(q8_0_avx2, "avx2,fma,f16c", dot_avx2);
    q8_0_kernel!(
        q8_0_vnni,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        dot_vnni
    );

    /// Generates a Q4_K kernel for `R` activation rows: eight super-blocks at a time, each
    /// block's `Σ sc·(q·a)` as eight i32 partial sums from `$block`, the mins' `Σ m·(Σ a)` as
    /// eight products, both reduced to one vector of eight block totals; the eight block terms
    /// are formed in f32 lanes with the portable path's operations and added to the row's sum
    /// one block at a time, in order.
    macro_rules! q4_k_kernel {
        ($name:ident, $features:literal, $block:ident) => {
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize>(w: &[u8], a: &[Q8KRow], out: &mut [f32]) {
                const BB: usize = q4_k::BLOCK_BYTES;
                let nb = w.len() / BB;
                let mut acc = [0f32; R];
                let mut first = 0;
                while first < nb {
                    let g = (nb - first).min(8);
                    let mut isum = [[_mm256_setzero_si256(); 8]; R];
                    let mut imin = [[_mm256_setzero_si256(); 8]; R];
                    let (mut dh, mut dminh) = ([0u16; 8], [0u16; 8]);
                    for j in 0..g {
                        let b = first + j;
                        let blk = &w[b * BB..(b + 1) * BB];
                        let (sc, m) = scales_mins(&blk[4..16]);
                        dh[j] = u16::from_le_bytes([blk[0], blk[1]]);
                        dminh[j] = u16::from_le_bytes([blk[2], blk[3]]);
                        // SAFETY: a 144-byte block; 256 activation quants and eight sums of
                        // block `b` in every row.
                        unsafe {
                            let ap: [*const i8; R] =
                                std::array::from_fn(|r| a[r].qs.as_ptr().add(256 * b));
                            let v = $block::<R>(blk.as_ptr(), ap, &sc);
                            let m32 =
                                _mm256_cvtepu8_epi32(_mm_loadl_epi64(m.as_ptr() as *const __m128i));
                            for r in 0..R {
                                isum[r][j] = v[r];
                                let sums = a[r].sums.as_ptr().add(8 * b) as *const __m256i;
                                imin[r][j] = _mm256_mullo_epi32(m32, _mm256_loadu_si256(sums));
                            }
                        }
                    }
                    // SAFETY: register arithmetic and stack arrays of eight.
                    unsafe {
                        let d = _mm256_cvtph_ps(_mm_loadu_si128(dh.as_ptr() as *const __m128i));
                        let dmin =
                            _mm256_cvtph_ps(_mm_loadu_si128(dminh.as_ptr() as *const __m128i));
                        for r in 0..R {
                            let mut da = [0f32; 8];
                            da[..g].copy_from_slice(&a[r].d[first..first + g]);
                            let da = _mm256_loadu_ps(da.as_ptr());
                            let is = _mm256_cvtepi32_ps(totals8(&isum[r]));
                            let im = _mm256_cvtepi32_ps(totals8(&imin[r]));
                            let t = _mm256_sub_ps(
                                _mm256_mul_ps(_mm256_mul_ps(d, da), is),
                                _mm256_mul_ps(_mm256_mul_ps(dmin, da), im),
                            );
                            let mut terms = [0f32; 8];
                            _mm256_storeu_ps(terms.as_mut_ptr(), t);
                            for term in &terms[..g] {
                                acc[r] += term;
                            }
                        }
                    }
                    first += g;
                }
                out[..R].copy_from_slice(&acc);
            }
        };
    }

    /// Scale `i` of eight i16 scales (repeated in both 128-bit halves) in every i16 lane.
    #[inline(always)]
    unsafe fn scale_lanes(sc16: __m256i, i: usize) -> __m256i {
        // SAFETY: register arithmetic only; the caller has AVX2.
        unsafe {
            _mm256_shuffle_epi8(
                sc16,
                _mm256_set1_epi16((((2 * i + 1) << 8) | (2 * i)) as i16),
            )
        }
    }

    /// One Q4_K super-block against `R` activation rows with AVX2: per 64 values the low and
    /// high nibbles times the activation quants (`vpmaddubsw`, at most 2·15·127 per i16), times
    /// the sub-block scales (`vpmaddwd`), summed in eight i32 lanes.
    #[inline(always)]
    unsafe fn q4_k_block_avx2<const R: usize>(
        blk: *const u8,
        ap: [*const i8; R],
        sc: &[u8; 8],
    ) -> [__m256i; R] {
        // SAFETY: the caller has AVX2 and passes a 144-byte block and 256 quants per row.
        unsafe {
            let low = _mm256_set1_epi8(0x0F);
            let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(
                sc.as_ptr() as *const __m128i
            )));
            let mut isum = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                let q = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
                let s_lo = scale_lanes(sc16, 2 * c);
                let s_hi = scale_lanes(sc16, 2 * c + 1);
                for r in 0..R {
                    let a_lo = _mm256_loadu_si256(ap[r].add(64 * c) as *const __m256i);
                    let a_hi = _mm256_loadu_si256(ap[r].add(64 * c + 32) as *const __m256i);
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), s_lo);
                    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), s_hi);
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(p_lo, p_hi));
                }
            }
            isum
        }
    }

    /// 16 copies of `x` in the low half and 16 of `y` in the high half.
    #[inline(always)]
    unsafe fn pair16(x: u8, y: u8) -> __m512i {
        // SAFETY: register arithmetic only; the caller has AVX-512 F.
        unsafe {
            _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set1_epi16(x as i16)),
                _mm256_set1_epi16(y as i16),
            )
        }
    }

    /// 32 bytes at `p` in the low half, 32 at `q` in the high half.
    #[inline(always)]
    unsafe fn load2(p: *const i8, q: *const i8) -> __m512i {
        // SAFETY: the caller guarantees 32 readable bytes at each and AVX-512 F.
        unsafe {
            _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_loadu_si256(p as *const __m256i)),
                _mm256_loadu_si256(q as *const __m256i),
            )
        }
    }

    /// [`q4_k_block_avx2`] with AVX-512 BW on 128 values per step: the low nibbles of two
    /// 32-byte chunks (sub-blocks `4c` and `4c + 2`) in one register and the high nibbles
    /// (`4c + 1`, `4c + 3`) in another; the 16 lanes folded to eight at the end.
    #[inline(always)]
    unsafe fn q4_k_block_avx512<const R: usize>(
        blk: *const u8,
        ap: [*const i8; R],
        sc: &[u8; 8],
    ) -> [__m256i; R] {
        // SAFETY: the caller has AVX-512 BW and passes a 144-byte block and 256 quants per row.
        unsafe {
            let low = _mm512_set1_epi8(0x0F);
            let mut isum = [_mm512_setzero_si512(); R];
            for c in 0..2 {
                let q = _mm512_loadu_si512(blk.add(16 + 64 * c) as *const __m512i);
                let lo = _mm512_and_si512(q, low);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low);
                let s_lo = pair16(sc[4 * c], sc[4 * c + 2]);
                let s_hi = pair16(sc[4 * c + 1], sc[4 * c + 3]);
                for r in 0..R {
                    let p = ap[r].add(128 * c);
                    let a_lo = load2(p, p.add(64));
                    let a_hi = load2(p.add(32), p.add(96));
                    let p_lo = _mm512_madd_epi16(_mm512_maddubs_epi16(lo, a_lo), s_lo);
                    let p_hi = _mm512_madd_epi16(_mm512_maddubs_epi16(hi, a_hi), s_hi);
                    isum[r] = _mm512_add_epi32(isum[r], _mm512_add_epi32(p_lo, p_hi));
                }
            }
            std::array::from_fn(|r| {
                _mm256_add_epi32(
                    _mm512_castsi512_si256(isum[r]),
                    _mm512_extracti64x4_epi64::<1>(isum[r]),
                )
            })
        }
    }

    q4_k_kernel!(q4_k_avx2, "avx2,fma,f16c", q4_k_block_avx2);
    q4_k_kernel!(
        q4_k_avx512,
        "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
        q4_k_block_avx512
    );
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{gaussian, reference};
    use super::*;

    const ISAS: [QuantIsa; 3] = [QuantIsa::Portable, QuantIsa::Avx2, QuantIsa::Avx512Vnni];

    /// Bound on `|y − x·Ŵᵀ|` from quantising the activations: each value moves by at most half
    /// its block's step, so the error is at most `Σ_k |Ŵ[n][k]| · step_k / 2`, plus f32
    /// rounding of the sums.
    fn activation_bound(x: &[f32], wd: &[f32], k: usize, block: usize, r: usize, n: usize) -> f64 {
        let xr = &x[r * k..(r + 1) * k];
        let wr = &wd[n * k..(n + 1) * k];
        let mut bound = 0f64;
        for (xb, wb) in xr.chunks(block).zip(wr.chunks(block)) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            let step = amax / 127.0;
            bound += wb.iter().map(|v| v.abs() as f64).sum::<f64>() * step * 0.5;
        }
        let mag: f64 = xr.iter().zip(wr).map(|(a, b)| (a * b).abs() as f64).sum();
        bound * 1.0001 + mag * 1e-5
    }

    fn check(kind: QuantKind, n: usize, k: usize, m: usize, seed: u64) {
        let wf = gaussian(n * k, seed, 0.05);
        let x = gaussian(m * k, seed + 100, 1.0);
        let w = QuantMatrix::quantize(kind, &wf, n, k).unwrap();
        let wd = w.dequantize_rows(0..n).unwrap();
        let want = reference(&x, m, &wd, n, k);
        let portable = w.matmul_rows_with(QuantIsa::Portable, &x, m).unwrap();
        for isa in ISAS {
            let got = w.matmul_rows_with(isa, &x, m).unwrap();
            // Every path sums exactly the same integers in the same float order.
            assert_eq!(got, portable, "{kind} {isa:?} {n}x{k} m={m}");
        }
        for r in 0..m {
            for j in 0..n {
                let g = portable[r * n + j] as f64;
                let bound = activation_bound(&x, &wd, k, kind.block_values(), r, j);
                assert!(
                    (g - want[r * n + j]).abs() <= bound,
                    "{kind} {n}x{k} m={m} [{r},{j}]: {g} vs {} (bound {bound})",
                    want[r * n + j]
                );
            }
        }
    }

    #[test]
    fn every_path_gives_the_same_bits_and_stays_within_the_activation_rounding() {
        // Widths with and without a tail of Q8_0 blocks past the last eight; all row counts.
        for m in 1..=MAX_QUANT_ROWS {
            check(QuantKind::Q8_0, 37, 32, m, 1);
            check(QuantKind::Q8_0, 19, 288, m, 2);
            check(QuantKind::Q8_0, 64, 2048, m, 3);
            check(QuantKind::Q4K, 37, 256, m, 4);
            check(QuantKind::Q4K, 23, 1280, m, 5);
            check(QuantKind::Q4K, 64, 2048, m, 6);
        }
    }

    #[test]
    fn zero_equal_and_extreme_rows_multiply_correctly() {
        for kind in [QuantKind::Q8_0, QuantKind::Q4K] {
            let (n, k) = (9, 512);
            let mut wf = gaussian(n * k, 21, 0.1);
            wf[..k].fill(0.0); // an all-zero weight row
            wf[k..2 * k].fill(0.25); // an all-equal one
            for v in &mut wf[2 * k..3 * k] {
                *v *= 1e4; // a large one
            }
            for v in &mut wf[3 * k..4 * k] {
                *v *= 1e-6; // a tiny one (scales flush towards f16 subnormals)
            }
            let w = QuantMatrix::quantize(kind, &wf, n, k).unwrap();
            let wd = w.dequantize_rows(0..n).unwrap();
            let mut x = gaussian(3 * k, 22, 2.0);
            x[k..2 * k].fill(0.0); // an all-zero activation row
            x[2 * k..3 * k].fill(-1.5); // an all-equal one
            let want = reference(&x, 3, &wd, n, k);
            let p = w.matmul_rows_with(QuantIsa::Portable, &x, 3).unwrap();
            for isa in ISAS {
                assert_eq!(w.matmul_rows_with(isa, &x, 3).unwrap(), p, "{kind} {isa:?}");
            }
            for r in 0..3 {
                assert_eq!(p[r * n], 0.0, "zero weight row");
                if r == 1 {
                    assert!(p[n..2 * n].iter().all(|&v| v == 0.0), "zero activation row");
                }
                for j in 0..n {
                    let bound = activation_bound(&x, &wd, k, kind.block_values(), r, j);
                    let g = p[r * n + j] as f64;
                    assert!((g - want[r * n + j]).abs() <= bound, "{kind} [{r},{j}]");
                }
            }
            // An all-equal activation row is represented exactly, so with the all-equal
            // weight row the product is exact up to f32 summation.
            let exact = -1.5 * k as f64 * wd[k] as f64;
            assert!((p[2 * n + 1] as f64 - exact).abs() <= exact.abs() * 1e-6);
        }
    }

    #[test]
    fn detection_and_downgrade() {
        let best = QuantIsa::detect();
        assert_eq!(QuantIsa::Avx512Vnni.supported(), best);
        assert_eq!(QuantIsa::Portable.supported(), QuantIsa::Portable);
        assert!(QuantIsa::Avx2.supported() <= QuantIsa::Avx2);
    }
}
