use burn::config::Config;

/// Shape of a LLaMA decoder, with the field names and defaults of HF's `LlamaConfig`.
///
/// Janus-Pro-7B's `language_config` omits most of these keys; the defaults below are exactly
/// what `transformers.LlamaConfig` fills in, so a missing key resolves the same way it does in
/// the reference.
#[derive(Config, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Rows of the token embedding table and of `lm_head`.
    #[config(default = 32000)]
    pub vocab_size: usize,
    /// Model width `D`.
    #[config(default = 4096)]
    pub hidden_size: usize,
    /// SwiGLU hidden width.
    #[config(default = 11008)]
    pub intermediate_size: usize,
    /// Number of decoder layers.
    #[config(default = 32)]
    pub num_hidden_layers: usize,
    /// Query heads.
    #[config(default = 32)]
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than the query heads).
    #[config(default = "None")]
    pub num_key_value_heads: Option<usize>,
    /// Size of the rotary tables; the longest sequence the model accepts.
    #[config(default = 2048)]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[config(default = 1e-6)]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
}

impl LlamaConfig {
    /// Key/value heads, defaulting to the number of query heads as HF does.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the divisibility constraints the layers rely on.
    pub fn validate(&self) -> Result<(), crate::LlmError> {
        let bad = |msg: String| Err(crate::LlmError::InvalidConfig(msg));
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.num_hidden_layers == 0 {
            return bad(
                "hidden_size, num_attention_heads and num_hidden_layers must be > 0".into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            ));
        }
        Ok(())
    }
}
