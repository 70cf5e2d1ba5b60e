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
