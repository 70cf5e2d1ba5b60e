//! The data pipeline's error type, the `file:line` of a sample, and the malformed-line policy.

use std::fmt;
use std::path::PathBuf;

use janus_core::processor::ProcessorError;
use serde::{Deserialize, Serialize};

/// What to do with a malformed line or a sample that cannot be built (bad image, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Report it in [`DataStats`](super::DataStats), count it and go on with the next one.
    #[default]
    Skip,
    /// Stop with the error.
    Fail,
}

/// Where a sample comes from: a JSONL file and a 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceLoc {
    /// The JSONL file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// Everything that can go wrong reading datasets and building batches.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A dataset file cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSONL line is not valid JSON, lacks a field, or has a field of the wrong type.
    #[error("{loc}: {message}")]
    Malformed {
        /// The line.
        loc: SourceLoc,
        /// What is wrong with it.
        message: String,
    },
    /// A line names an image file that does not exist.
    #[error("{loc}: image not found: {image}")]
    MissingImage {
        /// The line.
        loc: SourceLoc,
        /// The resolved image path.
        image: PathBuf,
    },
    /// The processor rejected a sample (undecodable image, placeholder/image mismatch, …).
    #[error("{loc}: {source}")]
    Sample {
        /// The line.
        loc: SourceLoc,
        /// The processor's error.
        source: ProcessorError,
    },
    /// The processor failed outside of any one sample (e.g. while collating a batch).
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    /// Encoding images to VQ codes failed.
    #[error("VQ encoding failed: {0}")]
    Vq(String),
    /// The VQ code cache cannot be read or written.
    #[error("code cache {path}: {message}")]
    Cache {
        /// The cache file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A kind with a non-zero ratio has no usable sample.
    #[error("no usable {kind} samples{}", if files.is_empty() { String::new() } else { format!(" in {}", files.join(", ")) })]
    EmptyDataset {
        /// The kind (`understanding`, `text`, `generation`).
        kind: &'static str,
        /// Its files.
        files: Vec<String>,
    },
    /// Every sample of a whole epoch was skipped.
    #[error("a whole epoch of {kind} samples was skipped; nothing left to draw")]
    NoUsableSamples {
        /// The kind.
        kind: &'static str,
    },
    /// The data configuration is inconsistent.
    #[error("invalid data config: {0}")]
    Config(String),
    /// A saved [`DataState`](super::DataState) does not fit the datasets or the seed.
    #[error("cannot resume: {0}")]
    StateMismatch(String),
}

impl DataError {
    /// Wraps an I/O error with its file.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// The line this error is about, if it is about one.
    pub fn loc(&self) -> Option<&SourceLoc> {
        match self {
            Self::Malformed { loc, .. }
            | Self::MissingImage { loc, .. }
            | Self::Sample { loc, .. } => Some(loc),
            _ => None,
        }
    }
}
