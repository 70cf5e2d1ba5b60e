//! The text tokenizer: `tokenizer.json` through the `tokenizers` crate, with the BOS/EOS policy
//! of HF `LlamaTokenizerFast`.

use std::path::Path;

use super::config::{RawTokenizerConfig, read_json_opt};
use super::error::ProcessorError;

/// A token id.
pub type TokenId = u32;

/// Ids of the tokens the processor and the generation loops need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sentence (prepended on encode).
    pub bos: TokenId,
    /// End of sentence (stop token for text generation).
    pub eos: TokenId,
    /// Left padding (`pad_tag`).
    pub pad: TokenId,
    /// `<image_placeholder>`: marks image embedding slots after expansion.
    pub image: TokenId,
    /// `<begin_of_image>`.
    pub image_start: TokenId,
    /// `<end_of_image>`.
    pub image_end: TokenId,
}

/// Byte-level BPE tokenizer with the Janus special tokens.
///
/// `LlamaTokenizerFast` rebuilds its post-processor from `add_bos_token`/`add_eos_token` in
/// `tokenizer_config.json` (defaults: true/false), overriding whatever `tokenizer.json` says, so
/// the tokenizer here encodes without the file's post-processor and adds BOS/EOS itself.
#[derive(Debug, Clone)]
pub struct JanusTokenizer {
    inner: tokenizers::Tokenizer,
    bos: TokenId,
    eos: TokenId,
    add_bos: bool,
    add_eos: bool,
}

const DEFAULT_BOS: &str = "<｜begin▁of▁sentence｜>";
const DEFAULT_EOS: &str = "<｜end▁of▁sentence｜>";

impl JanusTokenizer {
    /// Loads `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` from `dir`.
    ///
    /// Only `tokenizer.json` is required; the other two default to the Llama behaviour (BOS on,
    /// EOS off) with the DeepSeek BOS/EOS strings.
    pub fn from_dir(dir: &Path) -> Result<Self, ProcessorError> {
        let path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&path).map_err(|e| ProcessorError::io(&path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            // Syntax errors come from serde_json: report them with their position.
            match e.downcast_ref::<serde_json::Error>() {
                Some(json) => ProcessorError::json(&path, json),
                None => ProcessorError::TokenizerLoad {
                    path: path.clone(),
                    message: e.to_string(),
                },
            }
        })?;

        let config: RawTokenizerConfig =
            read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let map: RawTokenizerConfig =
            read_json_opt(&dir.join("special_tokens_map.json"))?.unwrap_or_default();
        let bos_text = config
            .bos_token
            .as_ref()
            .or(map.bos_token.as_ref())
            .map_or(DEFAULT_BOS, |t| t.content())
            .to_owned();
        let eos_text = config
            .eos_token
            .as_ref()
            .or(map.eos_token.as_ref())
            .map_or(DEFAULT_EOS, |t| t.content())
            .to_owned();

        // Look both up even when not auto-added: callers need EOS as the stop token.
        let lookup = |text: &str, role| {
            inner
                .token_to_id(text)
                .ok_or_else(|| ProcessorError::MissingToken {
                    token: text.to_owned(),
                    role,
                })
        };
        let bos = lookup(&bos_text, "bos_token")?;
        let eos = lookup(&eos_text, "eos_token")?;
        Ok(Self {
            inner,
            bos,
            eos,
            add_bos: config.add_bos_token.unwrap_or(true),
            add_eos: config.add_eos_token.unwrap_or(false),
        })
    }

    /// Id of the BOS token.
    pub fn bos_id(&self) -> TokenId {
        self.bos
    }

    /// Id of the EOS token (the stop token of text generation).
    pub fn eos_id(&self) -> TokenId {
        self.eos
    }

    /// The id of `token`, or a [`ProcessorError::MissingToken`] naming its `role`.
    pub fn require(&self, token: &str, role: &'static str) -> Result<TokenId, ProcessorError> {
        self.inner
            .token_to_id(token)
            .ok_or_else(|| ProcessorError::MissingToken {
                token: token.to_owned(),
                role,
            })
    }

    /// The id of `token`, if it is in the vocabulary (added tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<TokenId> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes `text` like `tokenizer.encode(text)` in the reference: BOS first (if
    /// `add_bos_token`), EOS last (if `add_eos_token`). Special-token text in `text` (image
    /// tags, EOS) becomes its single id.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>, ProcessorError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| ProcessorError::Tokenizer(e.to_string()))?;
        let body = encoding.get_ids();
        let mut ids = Vec::with_capacity(body.len() + 2);
        if self.add_bos {
            ids.push(self.bos);
        }
        ids.extend_from_slice(body);
        if self.add_eos {
            ids.push(self.eos);
        }
        Ok(ids)
    }

    /// Decodes ids to text, dropping special tokens (`skip_special_tokens=True`).
    pub fn decode(&self, ids: &[TokenId]) -> Result<String, ProcessorError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ProcessorError::Tokenizer(e.to_string()))
    }

    /// Decodes ids to text, keeping special tokens.
    pub fn decode_with_special(&self, ids: &[TokenId]) -> Result<String, ProcessorError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| ProcessorError::Tokenizer(e.to_string()))
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
