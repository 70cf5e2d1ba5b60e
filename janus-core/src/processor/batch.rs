//! One processed conversation and the left-padded batch the model consumes
//! (`VLChatProcessorOutput` and `BatchedVLChatProcessorOutput`).

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::error::ProcessorError;
use super::tokenizer::TokenId;

/// One conversation after templating, tokenisation, image-token expansion and image
/// preprocessing (`VLChatProcessorOutput`).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedInput {
    /// The templated prompt string.
    pub sft_format: String,
    /// Token ids with every image placeholder expanded to
    /// `image_start, image × num_image_tokens, image_end`.
    pub input_ids: Vec<TokenId>,
    /// Processed images, `[n_images, 3, S, S]` flattened row-major.
    pub pixel_values: Vec<f32>,
    /// Number of images (`pixel_values.len() / (3·S·S)`).
    pub num_images: usize,
}

impl PreparedInput {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// A left-padded batch on the host (`BatchedVLChatProcessorOutput`).
///
/// Every per-position array is `[batch_size, seq_len]` row-major; padding sits on the left so
/// all rows end at the same position. Turn it into tensors with [`BatchedInputs::to_tensors`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchedInputs {
    /// The templated prompt of each row.
    pub sft_format: Vec<String>,
    /// Rows `B`.
    pub batch_size: usize,
    /// Columns `T` (longest row).
    pub seq_len: usize,
    /// Image slots per row, `max(1, most images in a row)`.
    pub max_images: usize,
    /// Embedding slots per image `N`.
    pub num_image_tokens: usize,
    /// Image side `S`.
    pub image_size: usize,
    /// Images actually present in each row.
    pub images_per_row: Vec<usize>,
    /// `[B, T]` ids, `pad` on the left.
    pub input_ids: Vec<TokenId>,
    /// `[B, T]`, true on real tokens.
    pub attention_mask: Vec<bool>,
    /// `[B, T]`, true where the token is the image placeholder (an image embedding slot).
    pub images_seq_mask: Vec<bool>,
    /// `[B, max_images, N]`, true for the slots of real images.
    pub images_emb_mask: Vec<bool>,
    /// `[B, max_images, 3, S, S]`, zeros where a row has no image.
    pub pixel_values: Vec<f32>,
}

/// [`BatchedInputs`] as burn tensors on one device.
#[derive(Debug, Clone)]
pub struct BatchTensors {
    /// `[B, T]` token ids.
    pub input_ids: Tensor<2, Int>,
    /// `[B, T]`, 1 on real tokens and 0 on padding (an integer mask, like the reference's).
    pub attention_mask: Tensor<2, Int>,
    /// `[B, T]`, true at image embedding slots.
    pub images_seq_mask: Tensor<2, Bool>,
    /// `[B, n, N]`, true for the embedding slots of real images.
    pub images_emb_mask: Tensor<3, Bool>,
    /// `[B, n, 3, S, S]` normalised pixels in the device's float dtype.
    pub pixel_values: Tensor<5>,
}

impl BatchedInputs {
    /// Left-pads `items` into one batch, as `VLChatProcessor.batchify`.
    ///
    /// `pad` fills the left of shorter rows; `image` is the placeholder id marking embedding
    /// slots. Errors on an empty list, on a row longer than `max_len` (when given), or on an
    /// item whose pixel buffer does not hold `num_images` images of side `image_size`.
    pub fn from_prepared(
        items: &[PreparedInput],
        pad: TokenId,
        image: TokenId,
        num_image_tokens: usize,
        image_size: usize,
        max_len: Option<usize>,
    ) -> Result<Self, ProcessorError> {
        if items.is_empty() {
            return Err(ProcessorError::EmptyBatch);
        }
        let numel = 3 * image_size * image_size;
        for item in items {
            if item.pixel_values.len() != item.num_images * numel {
                return Err(ProcessorError::InvalidInput(format!(
                    "{} pixel values for {} image(s) of side {image_size}",
                    item.pixel_values.len(),
                    item.num_images
                )));
            }
            if let Some(max_len) = max_len
                && item.len() > max_len
            {
                return Err(ProcessorError::PromptTooLong {
                    len: item.len(),
                    max_len,
                });
            }
        }
        let b = items.len();
        let t = items.iter().map(PreparedInput::len).max().unwrap_or(0);
        let n = items.iter().map(|p| p.num_images).max().unwrap_or(0).max(1);

        let mut input_ids = vec![pad; b * t];
        let mut attention_mask = vec![false; b * t];
        let mut images_seq_mask = vec![false; b * t];
        let mut images_emb_mask = vec![false; b * n * num_image_tokens];
        let mut pixel_values = vec![0f32; b * n * numel];
        for (i, item) in items.iter().enumerate() {
            let start = i * t + (t - item.len());
            let end = (i + 1) * t;
            input_ids[start..end].copy_from_slice(&item.input_ids);
            attention_mask[start..end].fill(true);
            for (m, &id) in images_seq_mask[start..end].iter_mut().zip(&item.input_ids) {
                *m = id == image;
            }
            let px = i * n * numel;
            pixel_values[px..px + item.pixel_values.len()].copy_from_slice(&item.pixel_values);
            for j in 0..item.num_images {
                let e = (i * n + j) * num_image_tokens;
                images_emb_mask[e..e + num_image_tokens].fill(true);
            }
        }
        Ok(Self {
            sft_format: items.iter().map(|p| p.sft_format.clone()).collect(),
            batch_size: b,
            seq_len: t,
            max_images: n,
            num_image_tokens,
            image_size,
            images_per_row: items.iter().map(|p| p.num_images).collect(),
            input_ids,
            attention_mask,
            images_seq_mask,
            images_emb_mask,
            pixel_values,
        })
    }

    /// Copies the batch to `device` as tensors. Floats take the device's default float dtype
    /// (the reference casts pixels to bf16 when the model runs in bf16).
    pub fn to_tensors(&self, device: &Device) -> BatchTensors {
        let (b, t, n, s) = (
            self.batch_size,
            self.seq_len,
            self.max_images,
            self.image_size,
        );
        let ids: Vec<i64> = self.input_ids.iter().map(|&id| i64::from(id)).collect();
        let mask: Vec<i64> = self.attention_mask.iter().map(|&m| i64::from(m)).collect();
        BatchTensors {
            input_ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
            images_seq_mask: Tensor::from_data(
                TensorData::new(self.images_seq_mask.clone(), [b, t]),
                device,
            ),
            images_emb_mask: Tensor::from_data(
                TensorData::new(self.images_emb_mask.clone(), [b, n, self.num_image_tokens]),
                device,
            ),
            pixel_values: Tensor::from_data(
                TensorData::new(self.pixel_values.clone(), [b, n, 3, s, s]),
                device,
            ),
        }
    }

    /// Position ids for the batch, `cumsum(attention_mask) − 1` clamped at 0 (what HF derives
    /// for left-padded rows), `[B, T]` row-major.
    pub fn position_ids(&self) -> Vec<i64> {
        let mut out = vec![0i64; self.attention_mask.len()];
        for (row_out, row_mask) in out
            .chunks_mut(self.seq_len.max(1))
            .zip(self.attention_mask.chunks(self.seq_len.max(1)))
        {
            let mut acc = 0i64;
            for (o, &m) in row_out.iter_mut().zip(row_mask) {
                acc += i64::from(m);
                *o = (acc - 1).max(0);
            }
        }
        out
    }
}
