//! [`MixedLoader`]: three shuffled, endlessly cycling streams (understanding, text-only,
//! text-to-image) mixed by ratio into [`MixedBatch`]es, with a resumable [`DataState`].

use std::path::PathBuf;

use janus_core::processor::{ChatRoles, Processor, ProcessorError, RgbImage, load_image};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use super::error::{DataError, OnError};
use super::jsonl::{JsonlDataset, Located, MAX_REPORTED, Record};
use super::mix::{Kind, KindScheduler, MixRatio, mix_seed};
use super::record::{ConversationRecord, T2iRecord};
use super::sample::{
    LabelTurns, LabeledInput, Overlong, SampleOutcome, build_understanding, collate_understanding,
};
use super::t2i::{
    CodeCache, CodeEncoder, GenSample, center_crop, collate_generation, generation_prompt_ids,
    prompt_dropout, to_unit_range,
};
use crate::batch::MixedBatch;

/// What to load and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Understanding JSONL files (conversations with images).
    pub understanding: Vec<PathBuf>,
    /// Text-only JSONL files (the same formats, without images).
    pub text: Vec<PathBuf>,
    /// Text-to-image JSONL files (`{"prompt", "image"}`).
    pub generation: Vec<PathBuf>,
    /// Rows of each kind per batch, relatively. A kind with weight 0 is not loaded.
    pub ratio: MixRatio,
    /// Rows per batch, all kinds together (split by `ratio`, see [`KindScheduler`]).
    pub batch_size: usize,
    /// Seed of the shuffles and of prompt dropout.
    pub seed: u64,
    /// Shuffle each stream anew every epoch (else file order).
    pub shuffle: bool,
    /// Most tokens per row after image expansion (text-to-image rows: prompt + codes). `None`:
    /// the processor's limit (the model's context).
    pub max_len: Option<usize>,
    /// Overlong understanding/text rows: truncate or skip. Overlong text-to-image rows are
    /// always skipped (cutting the caption would change what the image shows).
    pub overlong: Overlong,
    /// Which assistant answers carry labels.
    pub label_turns: LabelTurns,
    /// Malformed lines and unusable samples: skip and count, or fail.
    pub on_error: OnError,
    /// Probability of replacing a text-to-image prompt with the unconditional one (CFG
    /// training; the Janus paper uses 10%).
    pub cfg_dropout: f64,
    /// Directory of the VQ code cache; `None` keeps codes in memory for the run.
    pub cache_dir: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            understanding: Vec::new(),
            text: Vec::new(),
            generation: Vec::new(),
            ratio: MixRatio::default(),
            batch_size: 1,
            seed: 42,
            shuffle: true,
            max_len: None,
            overlong: Overlong::Truncate,
            label_turns: LabelTurns::All,
            on_error: OnError::Skip,
            cfg_dropout: 0.1,
            cache_dir: None,
        }
    }
}

impl DataConfig {
    fn files(&self, kind: Kind) -> &[PathBuf] {
        match kind {
            Kind::Understanding => &self.understanding,
            Kind::Text => &self.text,
            Kind::Generation => &self.generation,
        }
    }
}

/// Position of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Completed passes over the stream.
    pub epoch: u64,
    /// Records drawn in the current epoch.
    pub cursor: u64,
    /// Valid records in the stream (checked on resume).
    pub len: u64,
}

/// Everything needed to continue a [`MixedLoader`] exactly where it stopped.
///
/// Shuffles and prompt dropout are pure functions of `(seed, stream, epoch, position)`, so no
/// generator state needs saving.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataState {
    /// The seed the loader was built with.
    pub seed: u64,
    /// Batches produced.
    pub batches: u64,
    /// Rows assigned to each kind so far ([`Kind::ALL`] order).
    pub kind_counts: [u64; 3],
    /// Each stream's position ([`Kind::ALL`] order).
    pub streams: [StreamState; 3],
}

impl DataState {
    /// The number of full passes over the understanding stream (or the first stream in use).
    pub fn epoch(&self) -> u64 {
        self.streams
            .iter()
            .find(|s| s.len > 0)
            .map_or(0, |s| s.epoch)
    }
}

/// Counts of what the loader skipped, truncated and encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataStats {
    /// Valid records per stream ([`Kind::ALL`] order).
    pub records: [usize; 3],
    /// Malformed lines skipped while indexing the files.
    pub malformed_lines: usize,
    /// Samples skipped while building them (undecodable image, file changed, …).
    pub skipped_samples: usize,
    /// Samples skipped for being too long.
    pub skipped_overlong: usize,
    /// Samples truncated to the length limit.
    pub truncated: usize,
    /// Images encoded to codes.
    pub codes_encoded: usize,
    /// Images whose codes came from the cache.
    pub codes_cached: usize,
    /// Text-to-image prompts replaced by the unconditional one.
    pub unconditional: usize,
    /// Rows produced per kind ([`Kind::ALL`] order).
    pub rows: [u64; 3],
    /// Messages (`file:line: …`) of the first skipped lines and samples.
    pub errors: Vec<String>,
}

impl DataStats {
    fn report(&mut self, err: &DataError) {
        if self.errors.len() < MAX_REPORTED {
            self.errors.push(err.to_string());
        }
    }
}

/// A shuffled, endlessly cycling stream of one kind.
struct Stream<R> {
    kind: Kind,
    dataset: Option<JsonlDataset<R>>,
    order: Vec<u32>,
    epoch: u64,
    cursor: u64,
}

impl<R: Record> Stream<R> {
    fn empty(kind: Kind) -> Self {
        Self {
            kind,
            dataset: None,
            order: Vec::new(),
            epoch: 0,
            cursor: 0,
        }
    }

    fn len(&self) -> usize {
        self.dataset.as_ref().map_or(0, JsonlDataset::len)
    }

    /// The visiting order of `epoch`: a Fisher–Yates shuffle seeded by (seed, kind, epoch).
    fn reorder(&mut self, seed: u64, shuffle: bool) {
        let n = self.len();
        self.order = (0..n as u32).collect();
        if !shuffle || n < 2 {
            return;
        }
        let mut rng =
            ChaCha8Rng::seed_from_u64(mix_seed(&[seed, self.kind.index() as u64, self.epoch]));
        for i in (1..n).rev() {
            // Lemire's multiply-shift: unbiased enough for shuffling (bias < n / 2⁶⁴).
            let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
            self.order.swap(i, j);
        }
    }

    /// The next record with its (epoch, position in epoch); rolls over to a new epoch.
    fn next(&mut self, seed: u64, shuffle: bool) -> Result<(Located<R>, u64, u64), DataError> {
        let n = self.len() as u64;
        if self.cursor >= n {
            self.epoch += 1;
            self.cursor = 0;
            self.reorder(seed, shuffle);
        }
        let (epoch, position) = (self.epoch, self.cursor);
        let index = self.order[position as usize] as usize;
        self.cursor += 1;
        let dataset = self.dataset.as_mut().expect("drawn only when non-empty");
        Ok((dataset.get(index)?, epoch, position))
    }

    fn state(&self) -> StreamState {
        StreamState {
            epoch: self.epoch,
            cursor: self.cursor,
            len: self.len() as u64,
        }
    }
}

/// Loads, mixes and batches the three kinds of training data.
///
/// Each stream is shuffled with `(seed, kind, epoch)` and cycles forever; rows are assigned to
/// kinds by a [`KindScheduler`]; understanding and text rows form the batch's
/// [`UnderstandingBatch`](crate::UnderstandingBatch) (left-padded, in row order), text-to-image
/// rows its [`GenerationBatch`](crate::GenerationBatch). Samples that cannot be used are
/// skipped (and the next one of the same stream is taken) or fail, by [`DataConfig::on_error`]
/// and [`DataConfig::overlong`]; since those decisions depend only on the files, a resumed
/// loader ([`MixedLoader::resume`]) reproduces an uninterrupted run batch for batch.
///
/// After an error the loader's position is somewhere inside the failed batch; resume from the
/// last saved [`DataState`] instead of continuing.
pub struct MixedLoader {
    config: DataConfig,
    processor: Processor,
    roles: ChatRoles,
    encoder: Option<Box<dyn CodeEncoder>>,
    cache: CodeCache,
    max_len: Option<usize>,
    scheduler: KindScheduler,
    understanding: Stream<ConversationRecord>,
    text: Stream<ConversationRecord>,
    generation: Stream<T2iRecord>,
    batches: u64,
    stats: DataStats,
}

impl std::fmt::Debug for MixedLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixedLoader")
            .field("config", &self.config)
            .field("roles", &self.roles)
            .field("state", &self.state())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl MixedLoader {
    /// Indexes the datasets of every kind with a non-zero ratio and starts at the beginning.
    ///
    /// `roles` are the model's chat roles (`janus.roles()`); `encoder` turns
    /// images into VQ codes and is required when the generation ratio is non-zero.
    ///
    /// Errors on an invalid config, an unreadable file, a malformed line under
    /// [`OnError::Fail`], or a kind with a non-zero ratio and no valid record.
    pub fn new(
        config: DataConfig,
        processor: Processor,
        roles: ChatRoles,
        encoder: Option<Box<dyn CodeEncoder>>,
    ) -> Result<Self, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        if config.ratio.total() == 0 {
            return Err(DataError::Config("the mixing ratio is all zeros".into()));
        }
        if !(0.0..=1.0).contains(&config.cfg_dropout) {
            return Err(DataError::Config(format!(
                "cfg_dropout {} is not a probability",
                config.cfg_dropout
            )));
        }
        if config.ratio.generation > 0 && encoder.is_none() {
            return Err(DataError::Config(
                "text-to-image data needs a VQ code encoder".into(),
            ));
        }
        let max_len = match (config.max_len, processor.max_len()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let image_tag = processor.config().image_tag.clone();
        let mut stats = DataStats::default();
        let mut understanding = Stream::empty(Kind::Understanding);
        let mut text = Stream::empty(Kind::Text);
        let mut generation = Stream::empty(Kind::Generation);
        for kind in Kind::ALL {
            if config.ratio.weight(kind) == 0 {
                continue;
            }
            let files = config.files(kind);
            let empty = || DataError::EmptyDataset {
                kind: kind.name(),
                files: files.iter().map(|p| p.display().to_string()).collect(),
            };
            // Index one stream, record what it skipped, and reject an empty one.
            macro_rules! open {
                ($stream:expr) => {{
                    let dataset = JsonlDataset::open(files, &image_tag, config.on_error)?;
                    stats.malformed_lines += dataset.skipped();
                    for e in dataset.skipped_errors() {
                        stats.report(e);
                    }
                    stats.records[kind.index()] = dataset.len();
                    if dataset.is_empty() {
                        return Err(empty());
                    }
                    $stream.dataset = Some(dataset);
                    $stream.reorder(config.seed, config.shuffle);
                }};
            }
            match kind {
                Kind::Understanding => open!(understanding),
                Kind::Text => open!(text),
                Kind::Generation => open!(generation),
            }
        }
        Ok(Self {
            cache: CodeCache::new(config.cache_dir.clone())?,
            scheduler: KindScheduler::new(config.ratio),
            config,
            processor,
            roles,
            encoder,
            max_len,
            understanding,
            text,
            generation,
            batches: 0,
            stats,
        })
    }

    /// Like [`MixedLoader::new`], then continues from `state` (saved by
    /// [`MixedLoader::state`] with the same config and files).
    ///
    /// Errors with [`DataError::StateMismatch`] when the seed or a stream's record count
    /// differs from the state's.
    pub fn resume(
        config: DataConfig,
        processor: Processor,
        roles: ChatRoles,
        encoder: Option<Box<dyn CodeEncoder>>,
        state: &DataState,
    ) -> Result<Self, DataError> {
        let mut loader = Self::new(config, processor, roles, encoder)?;
        if state.seed != loader.config.seed {
            return Err(DataError::StateMismatch(format!(
                "the state was saved with seed {}, the config has {}",
                state.seed, loader.config.seed
            )));
        }
        let (seed, shuffle) = (loader.config.seed, loader.config.shuffle);
        macro_rules! restore {
            ($stream:expr, $saved:expr) => {{
                let saved: &StreamState = $saved;
                let len = $stream.len() as u64;
                if saved.len != len {
                    return Err(DataError::StateMismatch(format!(
                        "the {} stream had {} records, now {len}",
                        $stream.kind.name(),
                        saved.len
                    )));
                }
                if len > 0 && saved.cursor > len {
                    return Err(DataError::StateMismatch(format!(
                        "{} cursor {} beyond {len} records",
                        $stream.kind.name(),
                        saved.cursor
                    )));
                }
                $stream.epoch = saved.epoch;
                $stream.cursor = saved.cursor;
                $stream.reorder(seed, shuffle);
            }};
        }
        restore!(loader.understanding, &state.streams[0]);
        restore!(loader.text, &state.streams[1]);
        restore!(loader.generation, &state.streams[2]);
        loader.scheduler = KindScheduler::with_counts(loader.config.ratio, state.kind_counts);
        loader.batches = state.batches;
        Ok(loader)
    }

    /// The position to save with a checkpoint.
    pub fn state(&self) -> DataState {
        DataState {
            seed: self.config.seed,
            batches: self.batches,
            kind_counts: self.scheduler.counts(),
            streams: [
                self.understanding.state(),
                self.text.state(),
                self.generation.state(),
            ],
        }
    }

    /// What was skipped, truncated, encoded, … so far.
    pub fn stats(&self) -> &DataStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &DataConfig {
        &self.config
    }

    /// The effective length limit (the config's, capped by the processor's).
    pub fn max_len(&self) -> Option<usize> {
        self.max_len
    }

    /// The next batch: `batch_size` rows split among the kinds by the ratio.
    pub fn next_batch(&mut self) -> Result<MixedBatch, DataError> {
        let mut rows: Vec<LabeledInput> = Vec::new();
        let mut gen_rows = 0;
        for _ in 0..self.config.batch_size {
            match self.scheduler.next_kind() {
                Kind::Generation => gen_rows += 1,
                kind => rows.push(self.next_understanding(kind)?),
            }
        }
        let generation = self.next_generation(gen_rows)?;
        self.batches += 1;
        Ok(MixedBatch {
            understanding: if rows.is_empty() {
                None
            } else {
                Some(collate_understanding(&self.processor, &rows)?)
            },
            generation: if generation.is_empty() {
                None
            } else {
                Some(collate_generation(&generation))
            },
        })
    }

    /// Encodes every text-to-image image whose codes are not cached yet, `chunk` images per
    /// encoder call, without moving the loader's position; returns how many were encoded.
    ///
    /// Run it before training so that the first epoch does not wait on the VQ model. Records
    /// that cannot be used are skipped or fail by [`DataConfig::on_error`].
    pub fn warm_code_cache(&mut self, chunk: usize) -> Result<usize, DataError> {
        let Some((size, identity)) = self
            .encoder
            .as_deref()
            .map(|e| (e.image_size(), e.identity().to_owned()))
        else {
            return Ok(0);
        };
        let mut keys: Vec<String> = Vec::new();
        let mut pixels: Vec<f32> = Vec::new();
        let mut encoded = 0;
        for index in 0..self.generation.len() {
            let dataset = self.generation.dataset.as_mut().expect("non-empty stream");
            let located = match dataset.get(index) {
                Ok(located) => located,
                Err(e) => {
                    self.skip_or_fail(e)?;
                    continue;
                }
            };
            let key = match CodeCache::key(&located.record.image, size, &identity) {
                Ok(key) => key,
                Err(e) => {
                    self.skip_or_fail(e)?;
                    continue;
                }
            };
            // The same image may appear on several lines.
            if keys.contains(&key) || self.cache.get(&key).is_some() {
                continue;
            }
            match load_image(&located.record.image) {
                Ok(image) => pixels.extend(to_unit_range(&center_crop(&image, size))),
                Err(source) => {
                    self.skip_or_fail(DataError::Sample {
                        loc: located.loc,
                        source,
                    })?;
                    continue;
                }
            }
            keys.push(key);
            if keys.len() >= chunk.max(1) {
                encoded += self.flush_codes(&mut keys, &mut pixels)?;
            }
        }
        encoded += self.flush_codes(&mut keys, &mut pixels)?;
        Ok(encoded)
    }

    /// Encodes the pending images and stores their codes under `keys`.
    fn flush_codes(
        &mut self,
        keys: &mut Vec<String>,
        pixels: &mut Vec<f32>,
    ) -> Result<usize, DataError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let encoder = self
            .encoder
            .as_deref()
            .ok_or_else(|| DataError::Config("text-to-image data needs an encoder".into()))?;
        let codes = encoder.encode(pixels, keys.len())?;
        if codes.len() != keys.len() {
            return Err(DataError::Vq("the encoder returned too few rows".into()));
        }
        for (key, codes) in keys.iter().zip(&codes) {
            self.cache.put(key, codes)?;
        }
        let n = keys.len();
        self.stats.codes_encoded += n;
        keys.clear();
        pixels.clear();
        Ok(n)
    }

    /// Applies the error policy to a failed sample: `Ok` to skip it, `Err` to stop.
    fn skip_or_fail(&mut self, err: DataError) -> Result<(), DataError> {
        match self.config.on_error {
            OnError::Fail => Err(err),
            OnError::Skip => {
                self.stats.skipped_samples += 1;
                self.stats.report(&err);
                Ok(())
            }
        }
    }

    /// Draws from `kind`'s stream until a usable understanding/text row comes out.
    fn next_understanding(&mut self, kind: Kind) -> Result<LabeledInput, DataError> {
        let len = match kind {
            Kind::Text => self.text.len(),
            _ => self.understanding.len(),
        };
        let (seed, shuffle) = (self.config.seed, self.config.shuffle);
        // A whole epoch of failures means nothing in the stream is usable.
        for _ in 0..len.max(1) {
            let stream = match kind {
                Kind::Text => &mut self.text,
                _ => &mut self.understanding,
            };
            let located = match stream.next(seed, shuffle) {
                Ok((located, _, _)) => located,
                Err(e) => {
                    self.skip_or_fail(e)?;
                    continue;
                }
            };
            let built = load_images(&located).and_then(|images| {
                build_understanding(
                    &self.processor,
                    &located.record,
                    &images,
                    &self.roles,
                    self.config.label_turns,
                    self.max_len,
                    self.config.overlong,
                )
                .map_err(|source| DataError::Sample {
                    loc: located.loc.clone(),
                    source,
                })
            });
            match built {
                Ok(SampleOutcome::Fits(row)) => return self.emit(kind, row),
                Ok(SampleOutcome::Truncated(row)) => {
                    self.stats.truncated += 1;
                    return self.emit(kind, row);
                }
                Ok(SampleOutcome::Skipped { .. }) => self.stats.skipped_overlong += 1,
                Err(e) => self.skip_or_fail(e)?,
            }
        }
        Err(DataError::NoUsableSamples { kind: kind.name() })
    }

    fn emit(&mut self, kind: Kind, row: LabeledInput) -> Result<LabeledInput, DataError> {
        self.stats.rows[kind.index()] += 1;
        Ok(row)
    }

    /// Draws `count` usable text-to-image rows; codes come from the cache or are encoded in
    /// one call for all misses.
    fn next_generation(&mut self, count: usize) -> Result<Vec<GenSample>, DataError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let (size, identity, codes_per_image) = {
            let encoder = self
                .encoder
                .as_deref()
                .ok_or_else(|| DataError::Config("text-to-image data needs an encoder".into()))?;
            (
                encoder.image_size(),
                encoder.identity().to_owned(),
                encoder.codes_per_image(),
            )
        };
        let pad = self.processor.special_tokens().pad;
        let (seed, shuffle, p) = (
            self.config.seed,
            self.config.shuffle,
            self.config.cfg_dropout,
        );
        let len = self.generation.len();

        struct Pending {
            text_ids: Vec<u32>,
            unconditional: bool,
            key: String,
            codes: Option<Vec<i64>>,
        }
        let mut pending: Vec<Pending> = Vec::with_capacity(count);
        let mut pixels: Vec<f32> = Vec::new();
        let mut failures = 0;
        while pending.len() < count {
            if failures >= len.max(1) {
                return Err(DataError::NoUsableSamples {
                    kind: Kind::Generation.name(),
                });
            }
            let (located, epoch, position) = match self.generation.next(seed, shuffle) {
                Ok(x) => x,
                Err(e) => {
                    failures += 1;
                    self.skip_or_fail(e)?;
                    continue;
                }
            };
            let loc = located.loc.clone();
            let ids =
                match generation_prompt_ids(&self.processor, &located.record.prompt, &self.roles) {
                    Ok(ids) => ids,
                    Err(ProcessorError::PromptTooLong { .. }) => {
                        failures += 1;
                        self.stats.skipped_overlong += 1;
                        continue;
                    }
                    Err(source) => {
                        failures += 1;
                        self.skip_or_fail(DataError::Sample { loc, source })?;
                        continue;
                    }
                };
            if let Some(max_len) = self.max_len
                && ids.len() + codes_per_image > max_len
            {
                // Cutting the caption would change what the image shows: skip instead.
                failures += 1;
                self.stats.skipped_overlong += 1;
                continue;
            }
            let key = match CodeCache::key(&located.record.image, size, &identity) {
                Ok(k) => k,
                Err(e) => {
                    failures += 1;
                    self.skip_or_fail(e)?;
                    continue;
                }
            };
            let cached = self.cache.get(&key);
            if cached.is_none() {
                match load_image(&located.record.image) {
                    Ok(image) => pixels.extend(to_unit_range(&center_crop(&image, size))),
                    Err(source) => {
                        failures += 1;
                        self.skip_or_fail(DataError::Sample { loc, source })?;
                        continue;
                    }
                }
            }
            let unconditional = prompt_dropout(seed, epoch, position, p);
            pending.push(Pending {
                text_ids: if unconditional {
                    janus_core::processor::unconditional_ids(&ids, pad)
                } else {
                    ids
                },
                unconditional,
                key,
                codes: cached,
            });
        }

        let misses = pending.iter().filter(|p| p.codes.is_none()).count();
        let mut fresh = match self.encoder.as_deref() {
            Some(encoder) if misses > 0 => encoder.encode(&pixels, misses)?.into_iter(),
            _ => Vec::new().into_iter(),
        };
        self.stats.codes_encoded += misses;
        self.stats.codes_cached += count - misses;
        let mut out = Vec::with_capacity(count);
        for p in pending {
            let codes = match p.codes {
                Some(codes) => codes,
                None => {
                    let codes = fresh
                        .next()
                        .ok_or_else(|| DataError::Vq("the encoder returned too few rows".into()))?;
                    self.cache.put(&p.key, &codes)?;
                    codes
                }
            };
            self.stats.unconditional += usize::from(p.unconditional);
            self.stats.rows[Kind::Generation.index()] += 1;
            out.push(GenSample {
                text_ids: p.text_ids,
                codes,
                unconditional: p.unconditional,
            });
        }
        Ok(out)
    }
}

/// Decodes the images of a conversation record.
fn load_images(located: &Located<ConversationRecord>) -> Result<Vec<RgbImage>, DataError> {
    located
        .record
        .images
        .iter()
        .map(|p| {
            load_image(p).map_err(|source| DataError::Sample {
                loc: located.loc.clone(),
                source,
            })
        })
        .collect()
}
