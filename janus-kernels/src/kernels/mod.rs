//! The kernels on plain slices: no burn types, f32 output, `None` or `false` (before writing
//! anything) when the sizes do not fit. The tensor-level ops reach them through `flex`.

pub(crate) mod act;
pub(crate) mod attention;
pub(crate) mod batch;
pub(crate) mod cached;
pub(crate) mod conv;
pub(crate) mod linear;
pub(crate) mod llama;
pub(crate) mod rows;
pub(crate) mod sgemm;
mod vmath;

/// A raw output buffer shared by parallel tasks that write disjoint elements of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);

// SAFETY: every user has each task write elements no other task writes, and keeps the buffer
// alive across the parallel loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        // Computing the pointer is safe; callers dereference it under their own SAFETY notes.
        self.0.wrapping_add(offset)
    }
}

/// Deterministic test inputs in [-1, 1), spread over the range by a multiplicative hash.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}
