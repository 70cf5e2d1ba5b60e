//! The batches the losses consume. Data loading produces them; the trainer moves them to the
//! device.

use janus_core::processor::BatchedInputs;

/// Label value of positions that carry no loss (prompt, image and padding positions).
pub const IGNORE_INDEX: i64 = -100;

/// Understanding (and text-only) samples: a left-padded processor batch plus next-token labels.
#[derive(Debug, Clone, PartialEq)]
pub struct UnderstandingBatch {
    /// Token ids, masks and pixels exactly as for inference.
    pub inputs: BatchedInputs,
    /// `[B, T]` row-major: the token id to predict *at* each position (HF convention: the loss
    /// compares logits at `t` with `labels[t + 1]`), [`IGNORE_INDEX`] where no loss applies.
    pub labels: Vec<i64>,
}

/// Text-to-image samples: a prompt ending with `<begin_of_image>` followed by the image codes.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationBatch {
    /// Prompt token ids per row (templated, ending with `<begin_of_image>`); rows may differ in
    /// length and are left-padded when batched.
    pub text_ids: Vec<Vec<u32>>,
    /// Image codes per row (`grid²` each, row-major), the targets of the image head.
    pub codes: Vec<Vec<i64>>,
}

/// One optimisation step's worth of data: either kind may be absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MixedBatch {
    /// Understanding and text-only rows.
    pub understanding: Option<UnderstandingBatch>,
    /// Text-to-image rows.
    pub generation: Option<GenerationBatch>,
}
