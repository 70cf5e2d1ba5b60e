//! The one way this crate calls `gemm`: single-threaded f32 `dst (+)= lhs · rhs` on strided
//! matrices, so the kernels name their operands instead of passing `gemm::gemm`'s nineteen
//! positional arguments.

/// A matrix in memory: the element `[i, j]` is at `ptr + i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    pub(crate) ptr: P,
    pub(crate) row_stride: isize,
    pub(crate) col_stride: isize,
}

impl<P> Strided<P> {
    /// Row-major with `row_stride` elements between rows, contiguous within a row.
    pub(crate) fn rows(ptr: P, row_stride: usize) -> Self {
        Strided {
            ptr,
            row_stride: row_stride as isize,
            col_stride: 1,
        }
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`, for `dst` `[m, n]`, `lhs`
/// `[m, k]` and `rhs` `[k, n]`, on the calling thread (the callers are already one task of a
/// parallel loop).
///
/// # Safety
/// Every element the three shapes and strides address must be inside a live allocation; `dst`
/// must not overlap `lhs` or `rhs`, and no other thread may write `dst`'s elements meanwhile.
pub(crate) unsafe fn sgemm(
    shape: (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
) {
    // SAFETY: the caller's contract.
    unsafe { sgemm_with(shape, dst, accumulate, lhs, rhs, gemm::Parallelism::None) }
}

/// [`sgemm`] on all of rayon's threads: `gemm` splits the product itself, as burn-flex's
/// matrix product does for large products (the f32 prefill path).
///
/// # Safety
/// As [`sgemm`], with no other thread touching `dst` during the call.
pub(crate) unsafe fn sgemm_parallel(
    shape: (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
) {
    // SAFETY: the caller's contract.
    unsafe { sgemm_with(shape, dst, false, lhs, rhs, gemm::Parallelism::Rayon(0)) }
}

unsafe fn sgemm_with(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    parallelism: gemm::Parallelism,
) {
    // `gemm` computes dst = alpha·dst + beta·lhs·rhs and reads dst only when told to.
    let alpha = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride,
            dst.row_stride,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            alpha,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Values per widened panel in [`widened_product`]: 64 MB of f32 scratch, a whole weight for
/// every layer of the 1B model, so a prefill product is the same single `gemm` call the f32 model
/// makes (cutting it into cache-sized panels repacked the activations for every panel and added a
/// join per panel: 10–15 % slower prefill). `lm_head` and the 7B's MLP weights go in a few panels.
pub(crate) const PANEL_VALUES: usize = 16 << 20;

thread_local! {
    /// [`widened_product`]'s f32 panel, reused by the next product on the same thread (at most
    /// [`PANEL_VALUES`] values once the largest weight has been seen).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `y = x · Wᵀ` (`x` `[m, k]`, `W` `[n, k]`, `y` `[m, n]`, row-major) for a weight stored in
/// another format: `widen(rows, out)` writes rows `rows` of `W` as f32 into `out`
/// (`rows.len() · k` values), `panel` rows at a time, into a scratch buffer kept per thread, and
/// each panel goes through [`sgemm_parallel`] over its transposed view.
///
/// # Panics
/// When `x` does not hold `m · k` values (the callers check it first).
pub(crate) fn widened_product<E>(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    panel: usize,
    mut widen: impl FnMut(std::ops::Range<usize>, &mut [f32]) -> Result<(), E>,
) -> Result<Vec<f32>, E> {
    assert_eq!(x.len(), m * k, "widened_product: x is not [m, k]");
    let panel = panel.clamp(1, n.max(1));
    // A fresh 46 MB buffer a product costs more in page faults than the widening itself
    // (measured: 40 % slower quantised products).
    let mut scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if scratch.len() < panel * k {
        scratch.resize(panel * k, 0.0);
    }
    let mut y = vec![0f32; m * n];
    let mut start = 0;
    let mut result = Ok(());
    while start < n {
        let end = (start + panel).min(n);
        let w = &mut scratch[..(end - start) * k];
        if let Err(e) = widen(start..end, w) {
            result = Err(e);
            break;
        }
        // SAFETY: `y` is `[m, n]` and the product writes its columns [start, end) of every row;
        // `x` is `[m, k]` (asserted above); the panel `w` is `[end - start, k]`, read as its
        // transposed `[k, end - start]` view. Nothing else touches `y` meanwhile.
        unsafe {
            sgemm_parallel(
                (m, end - start, k),
                Strided::rows(y.as_mut_ptr().add(start), n),
                Strided::rows(x.as_ptr(), k),
                Strided {
                    ptr: w.as_ptr(),
                    row_stride: 1,
                    col_stride: k as isize,
                },
            );
        }
        start = end;
    }
    SCRATCH.with(|s| *s.borrow_mut() = scratch);
    result.map(|()| y)
}
