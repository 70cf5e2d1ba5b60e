//! The one error type of janus-core; component errors convert into it.

use std::path::{Path, PathBuf};

/// Everything that can go wrong loading or running a Janus model from user input.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// A file or directory the model needs is absent.
    #[error("missing {what}: {path}")]
    Missing {
        /// What was expected there.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("malformed JSON{}: {message}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Json {
        /// The file, when known.
        path: Option<PathBuf>,
        /// serde_json's message.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The configuration parses but cannot describe a model.
    #[error("invalid config{}: {message}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Config {
        /// The file, when known.
        path: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
    /// No checkpoint layout was recognised in a directory.
    #[error(
        "no checkpoint in {0}: expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json"
    )]
    NoCheckpoint(PathBuf),
    /// A checkpoint file cannot be read or parsed.
    #[error("cannot read checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        message: String,
    },
    /// A PyTorch pickle imports or calls a global that a tensor state dict never uses (the
    /// `torch.load` code-execution exploit, or a pickled object that is not a state dict).
    /// It is refused before anything is unpickled, so nothing ran.
    #[error(
        "refusing checkpoint {}: {} calls `{global}`, which is not a tensor",
        path.display(),
        key.as_ref().map_or_else(|| "the pickle's root (or a value outside any entry)".to_string(), |k| format!("entry `{k}`"))
    )]
    UnsafePickle {
        /// The file.
        path: PathBuf,
        /// The state-dict key (dotted when nested) whose value makes the call; `None` at the
        /// root or outside any entry.
        key: Option<String>,
        /// The global, as `module.name`.
        global: String,
    },
    /// A shard index names a file that is not there.
    #[error("{index} names shard {shard}, which does not exist")]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The missing shard file.
        shard: PathBuf,
    },
    /// The model has a parameter that no checkpoint file provides.
    #[error("missing tensor `{key}` (expected shape {expected:?}) in the checkpoint")]
    MissingTensor {
        /// Checkpoint key.
        key: String,
        /// Shape the model expects (PyTorch layout).
        expected: Vec<usize>,
    },
    /// `config.json` and the weights are in different layouts: a half-converted directory.
    #[error(
        "half-converted model directory: config.json is in the {config} layout but {path} holds tensors named in the {weights} layout (e.g. `{key}`); convert the config and the weights together"
    )]
    LayoutMismatch {
        /// The layout of `config.json`.
        config: crate::config::ModelLayout,
        /// The layout of the tensor names.
        weights: crate::config::ModelLayout,
        /// The first tensor named in the other layout.
        key: String,
        /// The file holding it.
        path: PathBuf,
    },
    /// The checkpoint has a tensor the model does not use.
    #[error("unexpected tensor `{key}` with shape {found:?} in {path}")]
    UnexpectedTensor {
        /// Checkpoint key.
        key: String,
        /// Its shape.
        found: Vec<usize>,
        /// The file.
        path: PathBuf,
    },
    /// A checkpoint tensor has the wrong shape.
    #[error("tensor `{key}` has shape {found:?}, expected {expected:?} (in {path})")]
    ShapeMismatch {
        /// Checkpoint key.
        key: String,
        /// Shape the model expects (PyTorch layout).
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
        /// The file.
        path: PathBuf,
    },
    /// The parameters were asked for in a dtype that is not a float type, or that the device
    /// cannot compute in (WGSL devices have no bf16; some Vulkan drivers no f16).
    #[error("cannot hold the parameters in {dtype} on {device}: {reason}")]
    UnsupportedDtype {
        /// The dtype asked for, as burn names it.
        dtype: String,
        /// The device, as burn names it.
        device: String,
        /// Why not.
        reason: &'static str,
    },
    /// Quantised weights were asked for on an autodiff (training) device.
    #[error("{scheme} weights are for inference: load the model without quantisation to train it")]
    QuantTraining {
        /// The tier asked for.
        scheme: janus_llm::QuantScheme,
    },
    /// Image generation was asked of a quantised model directory whose recorded generation
    /// accuracy gate failed (docs/quantization.md).
    #[error(
        "image generation is refused for this {scheme} model: {reason}; draw with the float model, or a q8_0 directory that passes"
    )]
    QuantRefusedForGeneration {
        /// The model's tier.
        scheme: janus_llm::QuantScheme,
        /// The failed gate's measures.
        reason: String,
    },
    /// The batch has a different number of image placeholders than image embedding slots.
    #[error("{placeholders} image placeholder tokens but {image_tokens} image embeddings")]
    ImageTokenMismatch {
        /// Placeholder positions in the token sequence.
        placeholders: usize,
        /// Image embedding rows available.
        image_tokens: usize,
    },
    /// The prompt leaves no room for an answer in the model's context.
    #[error("prompt of {length} tokens does not fit the model's context of {context}")]
    PromptTooLong {
        /// Prompt tokens (the longest row of a batch).
        length: usize,
        /// `max_position_embeddings`.
        context: usize,
    },
    /// A generation option is out of its documented range.
    #[error("invalid generation option: {0}")]
    InvalidOption(String),
    /// A text-to-image prompt has no text.
    #[error("prompt {index} is empty")]
    EmptyPrompt {
        /// Position of the prompt in the call.
        index: usize,
    },
    /// The progress callback asked to stop; nothing was produced or written.
    #[error("generation cancelled")]
    Cancelled,
    /// Writing an output file failed; no partial file is left behind.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file (or directory) that could not be written.
        path: PathBuf,
        /// The OS or encoder error.
        source: std::io::Error,
    },
    /// The VQ image tokenizer refused its input (e.g. a code outside the codebook).
    #[error(transparent)]
    Vq(#[from] janus_vq::VqError),
    /// The language model refused its input.
    #[error(transparent)]
    Llm(#[from] janus_llm::LlmError),
    /// The processor refused its input (conversation, images, tokenizer files).
    #[error(transparent)]
    Processor(#[from] crate::processor::ProcessorError),
}

impl JanusError {
    pub(crate) fn json(e: serde_json::Error) -> Self {
        Self::Json {
            path: None,
            message: e.to_string(),
            line: e.line(),
            column: e.column(),
        }
    }

    pub(crate) fn config(message: String) -> Self {
        Self::Config {
            path: None,
            message,
        }
    }

    /// Attaches the file a parse error came from.
    pub(crate) fn in_file(self, file: &Path) -> Self {
        match self {
            Self::Json {
                message,
                line,
                column,
                ..
            } => Self::Json {
                path: Some(file.to_path_buf()),
                message,
                line,
                column,
            },
            Self::Config { message, .. } => Self::Config {
                path: Some(file.to_path_buf()),
                message,
            },
            other => other,
        }
    }
}

/// Reads a text file, telling a missing file apart from an unreadable one.
pub(crate) fn read_file(path: &Path) -> Result<String, JanusError> {
    if !path.exists() {
        // A mistyped model directory should be reported as the directory, not its config.
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            return Err(JanusError::Missing {
                what: "directory",
                path: dir.to_path_buf(),
            });
        }
        return Err(JanusError::Missing {
            what: "file",
            path: path.to_path_buf(),
        });
    }
    std::fs::read_to_string(path).map_err(|source| JanusError::Io {
        path: path.to_path_buf(),
        source,
    })
}
