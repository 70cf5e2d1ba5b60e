//! Few-row matrix products on plain slices.
//!
//! The weight is streamed once from memory, split between rayon's threads; every input row is
//! applied to each piece while it is in cache. Accumulation is always in f32, also for f16
//! weights.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// The most input rows one call takes (a decode step has 1, an image-generation step 2 per image).
pub const MAX_ROWS: usize = 8;

/// Input rows processed together against one piece of weight (register blocking).
const GROUP: usize = 4;

/// How the weight matrix is stored, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[d_out, d_in]`: PyTorch's `nn.Linear` and janus-llm's `LlamaLinear`; `y = x · Wᵀ`.
    OutIn,
    /// `[d_in, d_out]`: burn's `Linear`; `y = x · W`.
    InOut,
}

/// A row-major weight in one of the element types the kernels read.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// 16-bit IEEE floats, widened to f32 on load.
    F16(&'a [f16]),
    /// bfloat16 (the released checkpoints' dtype), widened to f32 on load (a 16-bit shift).
    BF16(&'a [bf16]),
}

impl Weights<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::F16(w) => w.len(),
            Weights::BF16(w) => w.len(),
        }
    }

    fn element_bytes(&self) -> usize {
        match self {
            Weights::F32(_) => 4,
            Weights::F16(_) | Weights::BF16(_) => 2,
        }
    }
}

/// f16 or bf16 values as f32, by `half`'s vectorised conversion.
pub(crate) fn widened<H>(x: &[H]) -> Vec<f32>
where
    [H]: HalfFloatSliceExt,
{
    let mut out = vec![0f32; x.len()];
    x.convert_to_f32_slice(&mut out);
    out
}

/// Which instructions the kernels may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, vectorised by the compiler for the build target.
    Portable,
    /// AVX2 + FMA + F16C, checked at run time.
    Avx2,
}

impl Isa {
    /// The best this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }
}

/// Whether the dot kernel asks for weight bytes a page ahead with a software prefetch: 0 = not
/// decided yet, 1 = no, 2 = yes.
static WEIGHT_PREFETCH: AtomicU8 = AtomicU8::new(0);

/// Whether the dot kernel (the `[out, in]` products and the attention scores) issues a software
/// prefetch a page ahead of its weight reads.
///
/// It pays on Intel and costs on AMD Zen 4 (measurements: docs/perf-notes.md §20, §27): Intel's
/// L2 streamer stops at each 4 KiB page, so a Xeon core streams the decode products faster with
/// it, while on Zen 4 it holds a core below what the memory gives when the memory is fast. So
/// the default is on for Intel CPUs and off elsewhere;
/// `JANUS_KERNELS_PREFETCH=1` or `=0` overrides it, as does [`set_weight_prefetch`].
pub fn weight_prefetch() -> bool {
    match WEIGHT_PREFETCH.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = match std::env::var("JANUS_KERNELS_PREFETCH").as_deref() {
                Ok("0") => false,
                Ok("1") => true,
                _ => cpu_is_intel(),
            };
            set_weight_prefetch(on);
            on
        }
    }
}

/// Overrides [`weight_prefetch`] for the rest of the process (measurements alternate both).
pub fn set_weight_prefetch(on: bool) {
    WEIGHT_PREFETCH.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

fn cpu_is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID leaf 0 exists on every x86-64 CPU.
        #[allow(unused_unsafe)]
        let id = unsafe { std::arch::x86_64::__cpuid(0) };
        // The vendor string "GenuineIntel" lies in EBX, EDX, ECX.
        let vendor = [id.ebx, id.edx, id.ecx].map(u32::to_le_bytes).concat();
        vendor == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x · Wᵀ` (`OutIn`) or `x · W` (`InOut`) for `rows` rows of `x` (`[rows, d_in]`, row-major).
///
/// Returns `[rows, d_out]` row-major, or `None` when `rows` is 0 or above [`MAX_ROWS`] or a
/// slice length does not match the dimensions.
pub fn matmul_rows(
    x: &[f32],
    rows: usize,
    weights: Weights<'_>,
    layout: WeightLayout,
    d_in: usize,
    d_out: usize,
) -> Option<Vec<f32>> {
    matmul_rows_with(Isa::detect(), x, rows, weights, layout, d_in, d_out)
}

/// `matmul_rows` with the instruction set chosen by the caller (tests compare both).
/// Asking for [`Isa::Avx2`] on a CPU without it falls back to [`Isa::Portable`].
pub fn matmul_rows_with(
    isa: Isa,
    x: &[f32],
    rows: usize,
    weights: Weights<'_>,
    layout: WeightLayout,
    d_in: usize,
    d_out: usize,
) -> Option<Vec<f32>> {
    if rows == 0
        || rows > MAX_ROWS
        || d_in == 0
        || d_out == 0
        || x.len() != rows * d_in
        || weights.len() != d_in * d_out
    {
        return None;
    }
    let isa = if isa == Isa::Avx2 && Isa::detect() != Isa::Avx2 {
        Isa::Portable
    } else {
        isa
    };
    let xs: Vec<&[f32]> = x.chunks_exact(d_in).collect();
    Some(match layout {
        WeightLayout::OutIn => out_in(isa, &xs, weights, d_in, d_out),
        WeightLayout::InOut => in_out(isa, &xs, weights, d_out),
    })
}

/// Pieces per thread: enough for rayon to balance, few enough that scheduling stays negligible
/// next to reading a piece (tens to hundreds of KiB).
const PIECES_PER_THREAD: usize = 4;

fn pieces(total: usize, multiple: usize) -> usize {
    let wanted = rayon::current_num_threads().max(1) * PIECES_PER_THREAD;
    let size = total.div_ceil(wanted).max(1);
    size.div_ceil(multiple) * multiple
}

/// `[out, in]`: every output is a dot product of a contiguous weight row with an input row.
fn out_in(isa: Isa, xs: &[&[f32]], weights: Weights<'_>, d_in: usize, d_out: usize) -> Vec<f32> {
    let rows = xs.len();
    // Results are gathered output-major ([d_out, rows]) so each piece writes one contiguous run.
    let mut t = vec![0f32; d_out * rows];
    let per_piece = pieces(d_out, 1).max((16 * 1024) / (d_in * weights.element_bytes()).max(1));
    t.par_chunks_mut(per_piece * rows)
        .enumerate()
        .for_each(|(piece, out)| {
            let first = piece * per_piece;
            for (k, o) in out.chunks_exact_mut(rows).enumerate() {
                let j = first + k;
                let span = j * d_in..(j + 1) * d_in;
                for (g, xg) in xs.chunks(GROUP).enumerate() {
                    let og = &mut o[g * GROUP..g * GROUP + xg.len()];
                    match weights {
                        Weights::F32(w) => dot_group(isa, &w[span.clone()], xg, og),
                        Weights::F16(w) => dot_group(isa, &w[span.clone()], xg, og),
                        Weights::BF16(w) => dot_group(isa, &w[span.clone()], xg, og),
                    }
                }
            }
        });
    if rows == 1 {
        return t;
    }
    let mut y = vec![0f32; rows * d_out];
    for (j, o) in t.chunks_exact(rows).enumerate() {
        for (r, v) in o.iter().enumerate() {
            y[r * d_out + j] = *v;
        }
    }
    y
}

/// `[in, out]`: each output block accumulates `x[r, i] · W[i, block]` over all `i`.
fn in_out(isa: Isa, xs: &[&[f32]], weights: Weights<'_>, d_out: usize) -> Vec<f32> {
    let rows = xs.len();
    let block = pieces(d_out, 8).min(2048);
    let starts: Vec<usize> = (0..d_out).step_by(block).collect();
    let parts: Vec<Vec<f32>> = starts
        .par_iter()
        .map(|&c0| {
            let cb = block.min(d_out - c0);
            let mut acc = vec![0f32; rows * cb];
            for (g, xg) in xs.chunks(GROUP).enumerate() {
                let ag = &mut acc[g * GROUP * cb..(g * GROUP + xg.len()) * cb];
                match weights {
                    Weights::F32(w) => axpy_group(isa, w, d_out, c0, cb, xg, ag),
                    Weights::F16(w) => axpy_group(isa, w, d_out, c0, cb, xg, ag),
                    Weights::BF16(w) => axpy_group(isa, w, d_out, c0, cb, xg, ag),
                }
            }
            acc
        })
        .collect();
    let mut y = vec![0f32; rows * d_out];
    for (&c0, acc) in starts.iter().zip(&parts) {
        let cb = acc.len() / rows;
        for r in 0..rows {
            y[r * d_out + c0..r * d_out + c0 + cb].copy_from_slice(&acc[r * cb..(r + 1) * cb]);
        }
    }
    y
}

/// A weight element the kernels can widen to f32.
pub(crate) trait Element: Copy + Send + Sync {
    fn widen(self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Element for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Element types with an AVX2 kernel. The defaults are the portable loops, which is what a
/// target without x86-64 gets (`Isa::detect` never returns `Avx2` there).
pub(crate) trait Avx2Element: Element {
    /// `out[r] = w · xs[r]`.
    fn dot_avx2(w: &[Self], xs: &[&[f32]], out: &mut [f32]) {
        dot_portable(w, xs, out)
    }
    /// `acc[r, c] += Σ_i xs[r][i] · w[i·d_out + c0 + c]` for `c < cb`.
    fn axpy_avx2(w: &[Self], d_out: usize, c0: usize, cb: usize, xs: &[&[f32]], acc: &mut [f32]) {
        axpy_portable(w, d_out, c0, cb, xs, acc)
    }
}

pub(crate) fn dot_group<E: Avx2Element>(isa: Isa, w: &[E], xs: &[&[f32]], out: &mut [f32]) {
    match isa {
        Isa::Avx2 => E::dot_avx2(w, xs, out),
        Isa::Portable => dot_portable(w, xs, out),
    }
}

pub(crate) fn axpy_group<E: Avx2Element>(
    isa: Isa,
    w: &[E],
    d_out: usize,
    c0: usize,
    cb: usize,
    xs: &[&[f32]],
    acc: &mut [f32],
) {
    match isa {
        Isa::Avx2 => E::axpy_avx2(w, d_out, c0, cb, xs, acc),
        Isa::Portable => axpy_portable(w, d_out, c0, cb, xs, acc),
    }
}

const LANES: usize = 8;

fn dot_portable<E: Element>(w: &[E], xs: &[&[f32]], out: &mut [f32]) {
    for (x, o) in xs.iter().zip(out.iter_mut()) {
        // Lane-wise partial sums: the compiler keeps them in vector registers.
        let mut lanes = [0f32; LANES];
        let mut wc = w.chunks_exact(LANES);
        let mut xc = x.chunks_exact(LANES);
        for (wl, xl) in (&mut wc).zip(&mut xc) {
            for l in 0..LANES {
                lanes[l] += wl[l].widen() * xl[l];
            }
        }
        let mut sum: f32 = lanes.iter().sum();
        for (a, b) in wc.remainder().iter().zip(xc.remainder()) {
            sum += a.widen() * b;
        }
        *o = sum;
    }
}

fn axpy_portable<E: Element>(
    w: &[E],
    d_out: usize,
    c0: usize,
    cb: usize,
    xs: &[&[f32]],
    acc: &mut [f32],
) {
    let d_in = xs[0].len();
    let mut wide = vec![0f32; cb];
    for i in 0..d_in {
        for (v, e) in wide.iter_mut().zip(&w[i * d_out + c0..i * d_out + c0 + cb]) {
            *v = e.widen();
        }
        for (r, x) in xs.iter().enumerate() {
            let s = x[i];
            for (a, v) in acc[r * cb..(r + 1) * cb].iter_mut().zip(&wide) {
                *a += s * v;
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Avx2Element for f32 {}

#[cfg(not(target_arch = "x86_64"))]
impl Avx2Element for f16 {}

#[cfg(not(target_arch = "x86_64"))]
impl Avx2Element for bf16 {}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Only reached after `Isa::detect` found AVX2, FMA and F16C.

    use super::*;
    // Named explicitly: `std::arch::x86_64` has types of the same names.
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 f32; unaligned store.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().sum()
    }

    /// How far ahead of its reads the dot kernel asks for weight bytes (into L2), where it does
    /// ([`super::weight_prefetch`]). The hardware streamer stops at each 4 KiB page (one f16 row
    /// of a 2048-wide weight), and one Xeon core seems to keep too few misses in flight to pull
    /// its share of the bandwidth; a software prefetch a page ahead makes the decode-sequence
    /// products faster there (measurements: docs/perf-notes.md §20); on Zen 4 it caps them
    /// instead (§27). It crosses into the next row, which is the next one read. The axpy
    /// kernel's rows are a whole `d_out` apart and a prefetch there slowed it down (§20), so it
    /// has none.
    const PREFETCH_BYTES: usize = 4096;

    /// Generates the dot and axpy kernels for one element type; `$load` widens 8 elements at a
    /// pointer to an `__m256`.
    macro_rules! kernels {
        ($t:ty, $dot:ident, $axpy:ident, $load:expr) => {
            /// `out[r] = w · xs[r]` for `R` rows at once: each 16 weights loaded once; `PF`:
            /// prefetch a page ahead ([`super::weight_prefetch`]).
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $dot<const R: usize, const PF: bool>(
                w: &[$t],
                xs: &[&[f32]],
                out: &mut [f32],
            ) {
                let n = w.len();
                let wp = w.as_ptr();
                let xp: [*const f32; R] = std::array::from_fn(|r| xs[r].as_ptr());
                let mut a0 = [_mm256_setzero_ps(); R];
                let mut a1 = [_mm256_setzero_ps(); R];
                let mut i = 0;
                // SAFETY: i + 16 <= n = len of w and of every xs[r] (checked by the caller).
                unsafe {
                    while i + 16 <= n {
                        if PF {
                            _mm_prefetch::<_MM_HINT_T1>(
                                (wp.wrapping_add(i) as *const i8).wrapping_add(PREFETCH_BYTES),
                            );
                        }
                        let w0 = $load(wp.add(i));
                        let w1 = $load(wp.add(i + 8));
                        for r in 0..R {
                            a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp[r].add(i)), a0[r]);
                            a1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp[r].add(i + 8)), a1[r]);
                        }
                        i += 16;
                    }
                }
                for r in 0..R {
                    // SAFETY: plain register arithmetic.
                    let mut s = unsafe { hsum(_mm256_add_ps(a0[r], a1[r])) };
                    for k in i..n {
                        s += w[k].widen() * xs[r][k];
                    }
                    out[r] = s;
                }
            }

            /// `acc[r, c] += Σ_i xs[r][i] · w[i, c0 + c]`, four weight rows per pass so each
            /// accumulator vector is loaded and stored once per four rows.
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $axpy<const R: usize>(
                w: &[$t],
                d_out: usize,
                c0: usize,
                cb: usize,
                xs: &[&[f32]],
                acc: &mut [f32],
            ) {
                let d_in = xs[0].len();
                let vec_end = cb / 8 * 8;
                let ap = acc.as_mut_ptr();
                let mut i = 0;
                while i < d_in {
                    let take = (d_in - i).min(4);
                    // Rows past the end repeat row i with a zero scale.
                    let mut s = [[_mm256_setzero_ps(); 4]; R];
                    let mut wrow = [w.as_ptr(); 4];
                    for k in 0..4 {
                        let row = if k < take { i + k } else { i };
                        // SAFETY: row < d_in and c0 + cb <= d_out.
                        wrow[k] = unsafe { w.as_ptr().add(row * d_out + c0) };
                        if k < take {
                            for r in 0..R {
                                s[r][k] = _mm256_set1_ps(xs[r][i + k]);
                            }
                        }
                    }
                    let mut c = 0;
                    // SAFETY: c + 8 <= cb; acc holds R·cb values; each wrow[k] has cb values.
                    unsafe {
                        while c < vec_end {
                            let mut wv = [_mm256_setzero_ps(); 4];
                            for k in 0..4 {
                                wv[k] = $load(wrow[k].add(c));
                            }
                            for r in 0..R {
                                let p = ap.add(r * cb + c);
                                let mut a = _mm256_loadu_ps(p);
                                for k in 0..4 {
                                    a = _mm256_fmadd_ps(s[r][k], wv[k], a);
                                }
                                _mm256_storeu_ps(p, a);
                            }
                            c += 8;
                        }
                    }
                    for c in vec_end..cb {
                        for r in 0..R {
                            let mut v = acc[r * cb + c];
                            for k in 0..take {
                                v += xs[r][i + k] * w[(i + k) * d_out + c0 + c].widen();
                            }
                            acc[r * cb + c] = v;
                        }
                    }
                    i += take;
                }
            }

            impl Avx2Element for $t {
                fn dot_avx2(w: &[Self], xs: &[&[f32]], out: &mut [f32]) {
                    // SAFETY: only called with Isa::Avx2, which `Isa::detect` confirmed.
                    unsafe {
                        match (xs.len(), super::weight_prefetch()) {
                            (1, true) => $dot::<1, true>(w, xs, out),
                            (2, true) => $dot::<2, true>(w, xs, out),
                            (3, true) => $dot::<3, true>(w, xs, out),
                            (_, true) => $dot::<4, true>(w, xs, out),
                            (1, false) => $dot::<1, false>(w, xs, out),
                            (2, false) => $dot::<2, false>(w, xs, out),
                            (3, false) => $dot::<3, false>(w, xs, out),
                            (_, false) => $dot::<4, false>(w, xs, out),
                        }
                    }
                }

                fn axpy_avx2(
                    w: &[Self],
                    d_out: usize,
                    c0: usize,
                    cb: usize,
                    xs: &[&[f32]],
                    acc: &mut [f32],
                ) {
                    // SAFETY: as above.
                    unsafe {
                        match xs.len() {
                            1 => $axpy::<1>(w, d_out, c0, cb, xs, acc),
                            2 => $axpy::<2>(w, d_out, c0, cb, xs, acc),
                            3 => $axpy::<3>(w, d_out, c0, cb, xs, acc),
                            _ => $axpy::<4>(w, d_out, c0, cb, xs, acc),
                        }
                    }
                }
            }
        };
    }

    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values; f16 is a 16-bit IEEE half.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    kernels!(f32, dot_f32, axpy_f32, load_f32);
    kernels!(f16, dot_f16, axpy_f16, load_f16);

    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values; a bf16 is the top half of an f32.
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16))
        }
    }

    kernels!(bf16, dot_bf16, axpy_bf16, load_bf16);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn reference(
        x: &[f32],
        rows: usize,
        w: &[f32],
        layout: WeightLayout,
        d_in: usize,
        d_out: usize,
    ) -> Vec<f64> {
        let mut y = vec![0f64; rows * d_out];
        for r in 0..rows {
            for j in 0..d_out {
                y[r * d_out + j] = (0..d_in)
                    .map(|i| {
                        let wv = match layout {
                            WeightLayout::OutIn => w[j * d_in + i],
                            WeightLayout::InOut => w[i * d_out + j],
                        };
                        x[r * d_in + i] as f64 * wv as f64
                    })
                    .sum();
            }
        }
        y
    }

    #[test]
    fn both_layouts_every_dtype_every_row_count_match_a_float64_reference() {
        // Odd sizes exercise the vector tails; 8 rows exercise two register groups.
        for (d_in, d_out) in [(37usize, 29usize), (64, 48), (133, 70)] {
            for rows in 1..=MAX_ROWS {
                let x = values(rows * d_in, rows as u64);
                let w32 = values(d_in * d_out, 7 + d_in as u64);
                let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
                let w16_wide: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
                let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
                let wb_wide: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
                for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
                    for isa in [Isa::Portable, Isa::Avx2] {
                        for (weights, wide) in [
                            (Weights::F32(&w32), &w32),
                            (Weights::F16(&w16), &w16_wide),
                            (Weights::BF16(&wb), &wb_wide),
                        ] {
                            let got = matmul_rows_with(isa, &x, rows, weights, layout, d_in, d_out)
                                .unwrap();
                            let want = reference(&x, rows, wide, layout, d_in, d_out);
                            for (g, w) in got.iter().zip(&want) {
                                assert!(
                                    (*g as f64 - w).abs()
                                        <= 1e-5 * (1.0 + w.abs()) * (d_in as f64).sqrt(),
                                    "{isa:?} {layout:?} rows {rows} {d_in}x{d_out}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_weight_prefetch_changes_no_result() {
        let (d_in, d_out) = (2051, 67); // rows longer than the prefetch distance, odd tails
        let w32 = values(d_in * d_out, 3);
        let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        let before = weight_prefetch();
        for rows in [1, 2, 5] {
            let x = values(rows * d_in, 11);
            for weights in [Weights::F32(&w32), Weights::F16(&w16)] {
                let run = |on| {
                    set_weight_prefetch(on);
                    matmul_rows_with(
                        Isa::Avx2,
                        &x,
                        rows,
                        weights,
                        WeightLayout::OutIn,
                        d_in,
                        d_out,
                    )
                    .unwrap()
                };
                let (with, without) = (run(true), run(false));
                assert_eq!(with, without, "rows {rows}");
            }
        }
        set_weight_prefetch(before);
    }

    #[test]
    fn the_vendor_check_agrees_with_the_kernel() {
        // Linux names the vendor in /proc/cpuinfo; elsewhere there is nothing to compare with.
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        if let Some(line) = info.lines().find(|l| l.starts_with("vendor_id")) {
            assert_eq!(cpu_is_intel(), line.ends_with("GenuineIntel"), "{line}");
        }
    }

    #[test]
    fn rejects_mismatched_sizes_and_row_counts() {
        let w = vec![0f32; 6];
        assert!(matmul_rows(&[0.0; 3], 1, Weights::F32(&w), WeightLayout::OutIn, 3, 2).is_some());
        assert!(matmul_rows(&[0.0; 4], 1, Weights::F32(&w), WeightLayout::OutIn, 3, 2).is_none());
        assert!(matmul_rows(&[], 0, Weights::F32(&w), WeightLayout::OutIn, 3, 2).is_none());
        assert!(matmul_rows(&[0.0; 27], 9, Weights::F32(&w), WeightLayout::OutIn, 3, 2).is_none());
        assert!(matmul_rows(&[0.0; 3], 1, Weights::F32(&w), WeightLayout::InOut, 3, 3).is_none());
    }
}
