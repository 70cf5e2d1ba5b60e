//! Step checkpoints: model weights, optimizer state and trainer state, written atomically.
//!
//! A checkpoint is a directory `checkpoint-<step>/` holding
//!
//! | file | content |
//! |---|---|
//! | `model.bpk` | every module parameter (burnpack, [`Module::save_file`]) |
//! | `optimizer.bpk` | the optimizer record ([`ModuleOptimizer::save`]) |
//! | `state.json` | [`TrainState`] plus the model's [`ModelFingerprint`] |
//!
//! Weights are burnpack rather than safetensors because burnpack keeps each parameter's
//! [`ParamId`](burn::module::ParamId), and burn's optimizer state is keyed by that id: after
//! [`load_checkpoint`] the restored model and optimizer line up again whatever ids the freshly
//! built model had. (Use [`crate::export`] for a Hugging Face-style model directory.)
//!
//! Writes go to a temporary directory beside the target, are fsynced, and are renamed into
//! place, so a crash or a full disk leaves either the old set of checkpoints or the new one,
//! never a half-written directory. One trainer should own a checkpoint directory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

/// Name prefix of a checkpoint directory (`checkpoint-<step>`).
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";
/// Model weights inside a checkpoint.
pub const MODEL_FILE: &str = "model.bpk";
/// Optimizer state inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// Trainer state inside a checkpoint.
pub const STATE_FILE: &str = "state.json";

const FORMAT: &str = "janus-train-checkpoint";
const VERSION: u32 = 1;
/// Prefixes of the scratch directories [`commit_dir`] leaves behind only on a crash.
const SCRATCH_PREFIXES: [&str; 2] = [".tmp-", ".old-"];

/// What can go wrong saving or resuming a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// burn could not write or read a weights or optimizer file.
    #[error("{}: {message}", path.display())]
    Record {
        /// The burnpack file.
        path: PathBuf,
        /// burn's error.
        message: String,
    },
    /// `state.json` is not valid.
    #[error("{}: invalid checkpoint state: {source}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `state.json` was written by another tool or format version.
    #[error("{}: unsupported checkpoint format `{format}` version {version}", path.display())]
    Format {
        /// The state file.
        path: PathBuf,
        /// Its `format` field.
        format: String,
        /// Its `version` field.
        version: u32,
    },
    /// The checkpoint was written for a model with other parameters.
    #[error(
        "{} belongs to another model: it has {found}, the model being resumed has {expected}",
        path.display()
    )]
    ForeignModel {
        /// The checkpoint directory.
        path: PathBuf,
        /// Fingerprint of the model passed to [`load_checkpoint`].
        expected: ModelFingerprint,
        /// Fingerprint stored in the checkpoint.
        found: ModelFingerprint,
    },
    /// The new checkpoint is complete, but removing an older one failed.
    #[error("checkpoint saved, but removing {} failed: {source}", path.display())]
    Prune {
        /// The directory that could not be removed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Random-number-generator position, so a resumed run draws what the original would have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The run's seed.
    pub seed: u64,
    /// Draws (or reseeds) made so far.
    pub counter: u64,
}

/// Everything besides weights and optimizer moments that a resume needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Completed passes over the data.
    pub epoch: usize,
    /// Where the data pipeline is, in its own format (opaque here).
    pub data_position: serde_json::Value,
    /// RNG position.
    pub rng: RngState,
    /// Running metrics (loss, tokens seen, …). Non-finite values round-trip as `null` → NaN.
    #[serde(with = "lossy_floats")]
    pub metrics: BTreeMap<String, f64>,
}

/// JSON has no NaN or ∞: write them as `null` and read `null` back as NaN, so a diverged
/// loss never makes a checkpoint unreadable.
mod lossy_floats {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&String, Option<f64>> = map
            .iter()
            .map(|(k, v)| (k, v.is_finite().then_some(*v)))
            .collect();
        map.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        let map = BTreeMap::<String, Option<f64>>::deserialize(d)?;
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
            .collect())
    }
}

/// Identity of a model's parameter layout: every parameter path and shape, hashed.
///
/// Two models agree when they have the same parameters under the same names with the same
/// shapes (dtype and values do not count), which is what loading weights and optimizer
/// moments into them requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFingerprint {
    /// Number of parameter tensors.
    pub tensors: usize,
    /// Number of parameter values.
    pub elements: u64,
    /// FNV-1a 64 of the sorted `path:shape` lines, in hex.
    pub digest: String,
}

impl ModelFingerprint {
    /// The fingerprint of `module`. Reads shapes only, so lazy parameters stay uninitialised.
    pub fn of<M: Module>(module: &M) -> Self {
        let mut visitor = ShapeLines::default();
        module.visit(&mut visitor);
        let mut lines = visitor.lines;
        lines.sort();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in lines.iter().flat_map(|l| l.bytes().chain([b'\n'])) {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self {
            tensors: lines.len(),
            elements: visitor.elements,
            digest: format!("{hash:016x}"),
        }
    }
}

impl fmt::Display for ModelFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tensors / {} values (digest {})",
            self.tensors, self.elements, self.digest
        )
    }
}

#[derive(Default)]
struct ShapeLines {
    path: Vec<String>,
    lines: Vec<String>,
    elements: u64,
}

impl ShapeLines {
    fn push(&mut self, kind: &str, shape: &[usize]) {
        self.elements += shape.iter().product::<usize>() as u64;
        self.lines
            .push(format!("{}:{kind}{shape:?}", self.path.join(".")));
    }
}

impl ModuleVisitor for ShapeLines {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.push("f", &param.lazy_shape());
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        self.push("i", &param.lazy_shape());
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
        self.push("b", &param.lazy_shape());
    }
}

/// `state.json`.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    model: ModelFingerprint,
    state: TrainState,
}

/// Writes `checkpoint-<step>/` under `dir` and keeps the `keep_last` newest checkpoints
/// (0 keeps all). Returns the new checkpoint's path.
///
/// The directory appears complete or not at all; an existing checkpoint of the same step is
/// replaced only once the new one is fully written. Older checkpoints are deleted only after
/// the new one is in place (by step number; the one just written is never deleted).
pub fn save_checkpoint<M: Module>(
    dir: &Path,
    step: usize,
    model: &M,
    optimizer: &ModuleOptimizer,
    state: &TrainState,
    keep_last: usize,
) -> Result<PathBuf, CheckpointError> {
    save_checkpoint_with(dir, step, model, optimizer, state, keep_last, |_| Ok(()))
}

/// [`save_checkpoint`], calling `extra` on the still-temporary checkpoint directory after
/// the standard files are written, to add files of the caller's own (the run's config, a
/// tokenizer…). An error from `extra` aborts the save like any write error: nothing is
/// committed and no older checkpoint is touched.
pub fn save_checkpoint_with<M: Module>(
    dir: &Path,
    step: usize,
    model: &M,
    optimizer: &ModuleOptimizer,
    state: &TrainState,
    keep_last: usize,
    extra: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<PathBuf, CheckpointError> {
    let target = dir.join(format!("{CHECKPOINT_PREFIX}{step}"));
    commit_dir(
        &target,
        |tmp| {
            let path = tmp.join(MODEL_FILE);
            model
                .clone()
                .save_file(&path)
                .map_err(|e| CheckpointError::Record {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let path = tmp.join(OPTIMIZER_FILE);
            optimizer.save(&path).map_err(|e| CheckpointError::Record {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let file = StateFile {
                format: FORMAT.into(),
                version: VERSION,
                model: ModelFingerprint::of(model),
                state: state.clone(),
            };
            let path = tmp.join(STATE_FILE);
            let json =
                serde_json::to_vec_pretty(&file).map_err(|source| CheckpointError::State {
                    path: path.clone(),
                    source,
                })?;
            fs::write(&path, json).map_err(io_err(&path))?;
            extra(tmp).map_err(io_err(tmp))
        },
        |path, source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        },
    )?;
    prune(dir, keep_last, &target)?;
    Ok(target)
}

/// Every complete checkpoint under `dir` (a `checkpoint-<step>` directory with a
/// `state.json`), oldest step first. A missing `dir` has none.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>, CheckpointError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX))
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.join(STATE_FILE).is_file() {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The checkpoint with the highest step under `dir`, if any.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    Ok(list_checkpoints(dir)?.pop().map(|(_, path)| path))
}

/// Restores a checkpoint directory (as returned by [`latest_checkpoint`]) into `model` and
/// `optimizer`, which should be built the same way as for the original run.
///
/// Refuses, with [`CheckpointError::ForeignModel`], a checkpoint whose parameter names and
/// shapes differ from `model`'s. Weights keep the dtype they were saved in.
pub fn load_checkpoint<M: Module>(
    checkpoint: &Path,
    model: M,
    optimizer: ModuleOptimizer,
) -> Result<(M, ModuleOptimizer, TrainState), CheckpointError> {
    let path = checkpoint.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let file: StateFile =
        serde_json::from_slice(&bytes).map_err(|source| CheckpointError::State {
            path: path.clone(),
            source,
        })?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(CheckpointError::Format {
            path,
            format: file.format,
            version: file.version,
        });
    }
    let expected = ModelFingerprint::of(&model);
    if expected != file.model {
        return Err(CheckpointError::ForeignModel {
            path: checkpoint.to_path_buf(),
            expected,
            found: file.model,
        });
    }
    let record_err = |path: PathBuf| {
        move |e: burn::store::RecordError| CheckpointError::Record {
            path,
            message: e.to_string(),
        }
    };
    let path = checkpoint.join(MODEL_FILE);
    let model = model.try_load_file(&path).map_err(record_err(path))?;
    // After the model: the optimizer state is keyed by the parameter ids the weights restore.
    let path = checkpoint.join(OPTIMIZER_FILE);
    let optimizer = optimizer.load(&path).map_err(record_err(path))?;
    Ok((model, optimizer, file.state))
}

/// Deletes all but the `keep_last` newest checkpoints (never `keep`), and scratch
/// directories a crashed save left behind.
fn prune(dir: &Path, keep_last: usize, keep: &Path) -> Result<(), CheckpointError> {
    let remove = |path: PathBuf| {
        fs::remove_dir_all(&path).map_err(|source| CheckpointError::Prune { path, source })
    };
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if SCRATCH_PREFIXES
            .iter()
            .any(|p| name.starts_with(&format!("{p}{CHECKPOINT_PREFIX}")))
        {
            remove(entry.path())?;
        }
    }
    if keep_last == 0 {
        return Ok(());
    }
    let mut older: Vec<PathBuf> = list_checkpoints(dir)?
        .into_iter()
        .map(|(_, path)| path)
        .filter(|path| path != keep)
        .collect();
    let excess = (older.len() + 1).saturating_sub(keep_last);
    for path in older.drain(..excess.min(older.len())) {
        remove(path)?;
    }
    Ok(())
}

/// Creates `target` atomically: `fill` writes into a fresh scratch directory beside it, then
/// every file is fsynced and the directory renamed into place.
///
/// On any error the scratch directory is removed and an existing `target` is left as it was.
/// An existing `target` is first renamed aside and deleted after the swap, so a crash in
/// between leaves it under a `.old-` name rather than losing it.
pub(crate) fn commit_dir<E>(
    target: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
    io: impl Fn(&Path, io::Error) -> E,
) -> Result<(), E> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| {
            io(
                target,
                io::Error::new(io::ErrorKind::InvalidInput, "no directory name"),
            )
        })?
        .to_string_lossy()
        .into_owned();
    fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let scratch = |kind: &str| parent.join(format!("{kind}{name}-{}-{nonce}", std::process::id()));
    let tmp = scratch(SCRATCH_PREFIXES[0]);
    fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;

    let written = fill(&tmp).and_then(|()| sync_dir_tree(&tmp).map_err(|(p, e)| io(&p, e)));
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    let old = scratch(SCRATCH_PREFIXES[1]);
    let replaced = match fs::symlink_metadata(target) {
        Ok(_) => {
            if let Err(e) = fs::rename(target, &old) {
                let _ = fs::remove_dir_all(&tmp);
                return Err(io(target, e));
            }
            true
        }
        Err(_) => false,
    };
    if let Err(e) = fs::rename(&tmp, target) {
        if replaced {
            let _ = fs::rename(&old, target);
        }
        let _ = fs::remove_dir_all(&tmp);
        return Err(io(target, e));
    }
    sync_dir(&parent).map_err(|e| io(&parent, e))?;
    if replaced {
        // Best effort: the new directory is in place; a leftover is pruned later.
        let _ = fs::remove_dir_all(&old).or_else(|_| fs::remove_file(&old));
    }
    Ok(())
}

/// fsyncs every file under `dir`, then the directories themselves.
fn sync_dir_tree(dir: &Path) -> Result<(), (PathBuf, io::Error)> {
    let entries = fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| (path.clone(), e))?;
        if kind.is_dir() {
            sync_dir_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| (path.clone(), e))?;
        }
    }
    sync_dir(dir).map_err(|e| (dir.to_path_buf(), e))
}

/// fsyncs a directory so renames and creations inside it are durable (a no-op off Unix,
/// where directories cannot be opened as files).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
