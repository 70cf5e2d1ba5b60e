//! The processor's error type.

use std::path::PathBuf;

/// Everything that can go wrong turning a conversation and its images into model inputs.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// Reading a file failed (missing, unreadable, ...).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("malformed JSON in {path} at line {line}, column {column}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the error has no position, e.g. an I/O error).
        line: usize,
        /// 1-based column (0 when the error has no position).
        column: usize,
        /// serde_json's message.
        message: String,
    },
    /// A configuration file parses but its values cannot be used.
    #[error("invalid config in {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `tokenizer.json` cannot be loaded.
    #[error("cannot load tokenizer {path}: {message}")]
    TokenizerLoad {
        /// The file.
        path: PathBuf,
        /// The `tokenizers` crate's message.
        message: String,
    },
    /// Encoding or decoding failed inside the `tokenizers` crate.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// A token the processor needs (BOS, pad, image tags, ...) is not in the vocabulary.
    #[error("the tokenizer has no token {token:?} (needed as {role})")]
    MissingToken {
        /// The token's text.
        token: String,
        /// What the processor uses it for.
        role: &'static str,
    },
    /// `sft_format` names a template this crate does not implement.
    #[error("unsupported sft_format {0:?} (supported: \"deepseek\")")]
    UnsupportedTemplate(String),
    /// A conversation with no messages.
    #[error("the conversation has no messages")]
    EmptyConversation,
    /// The prompt's image placeholders and the images given do not pair up.
    #[error("the prompt has {placeholders} image placeholder(s) but {images} image(s) were given")]
    ImageCountMismatch {
        /// `<image_placeholder>` tokens in the encoded prompt.
        placeholders: usize,
        /// Images supplied.
        images: usize,
    },
    /// An image file could not be decoded.
    #[error("cannot decode image {source_name}: {message}")]
    ImageDecode {
        /// The file path, or a description for in-memory data.
        source_name: String,
        /// The decoder's message.
        message: String,
    },
    /// An image with a zero dimension.
    #[error("image has invalid size {width}x{height}")]
    InvalidImageSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// A sequence longer than the allowed context.
    #[error("prompt is {len} tokens long, longer than the maximum of {max_len}")]
    PromptTooLong {
        /// Tokens after image expansion.
        len: usize,
        /// The limit.
        max_len: usize,
    },
    /// `batchify` was given no inputs.
    #[error("cannot batch zero inputs")]
    EmptyBatch,
    /// A hand-built [`PreparedInput`](super::PreparedInput) whose parts disagree.
    #[error("inconsistent prepared input: {0}")]
    InvalidInput(String),
}

impl ProcessorError {
    /// Wraps a serde_json error with the file it came from, keeping its position.
    pub(crate) fn json(path: impl Into<PathBuf>, err: &serde_json::Error) -> Self {
        let full = err.to_string();
        // serde_json appends the position, which this error reports on its own.
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        Self::Json {
            path: path.into(),
            line: err.line(),
            column: err.column(),
            message,
        }
    }

    /// Wraps an I/O error with its file.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
