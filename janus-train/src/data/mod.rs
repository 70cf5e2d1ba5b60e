//! The training data pipeline: JSONL datasets → labelled samples → mixed, padded batches.
//!
//! Three kinds of data feed a Janus training run:
//!
//! | kind | JSONL line | becomes |
//! |---|---|---|
//! | understanding | ms-swift `{"query", "response", "images", "history"}` or `{"messages", "images"}` | [`LabeledInput`]: the conversation through the `deepseek` template with the understanding system prompt, labels only on the answers |
//! | text-only | the same two formats, without images | the same |
//! | text-to-image | `{"prompt": "…", "image": "path"}` | [`GenSample`]: generation prompt ids (`…<begin_of_image>`) and the image's VQ codes (cached on disk) |
//!
//! [`MixedLoader`] draws the three kinds by a [`MixRatio`] (presets for the papers' stages),
//! shuffles each with a seed, and yields [`MixedBatch`](crate::MixedBatch)es; its
//! [`DataState`] makes a resumed run see exactly the batches an uninterrupted one would.
//!
//! Files are read line by line ([`JsonlReader`]); a dataset keeps only the byte offset of each
//! valid line ([`JsonlDataset`]) and re-reads a line when its sample is drawn. A malformed line is
//! reported with `file:line` and, by [`OnError`], skipped and counted or fatal.
//!
//! ```no_run
//! use janus_core::{Janus, LoadOptions};
//! use janus_train::data::{DataConfig, MixRatio, MixedLoader, VqCodeEncoder};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = janus_core::burn::tensor::Device::flex();
//! let janus = Janus::load("models/Janus-Pro-1B", &LoadOptions::default(), &device)?;
//! let config = DataConfig {
//!     understanding: vec!["data/llava.jsonl".into()],
//!     text: vec!["data/text.jsonl".into()],
//!     generation: vec!["data/t2i.jsonl".into()],
//!     ratio: MixRatio::JANUS_PRO_STAGE_3,
//!     batch_size: 10,
//!     cache_dir: Some("cache/vq-codes".into()),
//!     ..DataConfig::default()
//! };
//! let encoder = VqCodeEncoder::from_janus(&janus)?;
//! let mut loader = MixedLoader::new(
//!     config,
//!     janus.processor.clone(),
//!     janus.roles(),
//!     Some(Box::new(encoder)),
//! )?;
//! let batch = loader.next_batch()?;
//! let state = loader.state(); // store it in the checkpoint; `MixedLoader::resume` continues
//! # let _ = (batch, state); Ok(()) }
//! ```

mod batcher;
mod error;
mod jsonl;
mod mix;
mod record;
mod sample;
mod t2i;

pub use self::batcher::{DataConfig, DataState, DataStats, MixedLoader, StreamState};
pub use self::error::{DataError, OnError, SourceLoc};
pub use self::jsonl::{JsonlDataset, JsonlReader, Located, ParseContext, Record, RecordError};
pub use self::mix::{Kind, KindScheduler, MixRatio};
pub use self::record::{ConversationRecord, T2iRecord, Turn};
pub use self::sample::{
    LabelTurns, LabeledInput, Overlong, SampleOutcome, build_understanding, collate_understanding,
    conversation_messages, expand_labels, label_prompt,
};
pub use self::t2i::{
    CodeCache, CodeEncoder, GenSample, VqCodeEncoder, center_crop, collate_generation,
    generation_prompt_ids, prompt_dropout, to_unit_range,
};
/// The CFG unconditional prompt rule, shared with inference (defined in janus-core).
pub use janus_core::processor::unconditional_ids;
