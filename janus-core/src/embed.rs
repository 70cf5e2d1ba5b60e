//! Input assembly: token embeddings with image features scattered into the placeholder rows
//! (the reference's `prepare_inputs_embeds`), and generation-input embeddings.

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::JanusError;
use crate::model::JanusModel;
use crate::processor::BatchedInputs;

impl JanusModel {
    /// Token embeddings of a processed batch, with the understanding adaptor's image features in
    /// place of the image placeholders.
    ///
    /// The k-th placeholder of the batch (row-major over `[B, T]`) receives the k-th real image
    /// slot (row-major over `[B, n, N]`), exactly like the reference's boolean-mask assignment.
    /// Rows without images, and batches without any, skip the vision tower.
    ///
    /// # Shapes
    /// - output: `[B, T, D]`
    pub fn embed_inputs(&self, batch: &BatchedInputs) -> Result<Tensor<3>, JanusError> {
        let device = self.language_model.lm_head.weight.lazy_device();
        let (b, t) = (batch.batch_size, batch.seq_len);
        let ids: Vec<i64> = batch
            .input_ids
            .iter()
            .map(|&id| i64::from(id).max(0))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
        let text = self.language_model.model.embed(ids);

        let seq_positions: Vec<i64> = positions_of(&batch.images_seq_mask);
        let emb_slots: Vec<i64> = positions_of(&batch.images_emb_mask);
        if seq_positions.len() != emb_slots.len() {
            return Err(JanusError::ImageTokenMismatch {
                placeholders: seq_positions.len(),
                image_tokens: emb_slots.len(),
            });
        }
        if seq_positions.is_empty() {
            return Ok(text);
        }
        let (n, s) = (batch.max_images, batch.image_size);
        let pixels = Tensor::<4>::from_data(
            TensorData::new(batch.pixel_values.clone(), [b * n, 3, s, s]),
            (&device, text.dtype()),
        );
        let features = self.aligner.forward(self.vision_model.forward(pixels));
        let [_, tokens, d] = features.dims();
        if tokens != batch.num_image_tokens {
            return Err(JanusError::ImageTokenMismatch {
                placeholders: batch.num_image_tokens,
                image_tokens: tokens,
            });
        }
        // One gather from [text rows; image rows] builds the result, which keeps it differentiable.
        let table = Tensor::cat(
            vec![
                text.reshape([b * t, d]),
                features.reshape([b * n * tokens, d]),
            ],
            0,
        );
        let mut index: Vec<i64> = (0..(b * t) as i64).collect();
        for (pos, slot) in seq_positions.iter().zip(&emb_slots) {
            index[*pos as usize] = (b * t) as i64 + slot;
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b * t]), &device);
        Ok(table.select(0, index).reshape([b, t, d]))
    }

    /// Generation-input embeddings of image codes: `gen_aligner(gen_embed(codes))`.
    ///
    /// # Shapes
    /// - codes: `[B, T]`
    /// - output: `[B, T, D]`
    pub fn embed_image_codes(&self, codes: Tensor<2, Int>) -> Tensor<3> {
        self.gen_aligner.forward(self.gen_embed.forward(codes))
    }
}

fn positions_of(mask: &[bool]) -> Vec<i64> {
    mask.iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .map(|(i, _)| i as i64)
        .collect()
}
