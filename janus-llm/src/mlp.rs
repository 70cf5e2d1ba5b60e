use crate::linear::{LlamaLinear, LlamaLinearConfig};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

/// Configuration of [`LlamaMlp`].
#[derive(Config, Debug)]
pub struct LlamaMlpConfig {
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU hidden width.
    pub intermediate_size: usize,
}

/// SwiGLU feed-forward: `down(silu(gate(x)) ⊙ up(x))`, no biases.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// `D → I`, through SiLU.
    pub gate_proj: LlamaLinear,
    /// `D → I`.
    pub up_proj: LlamaLinear,
    /// `I → D`.
    pub down_proj: LlamaLinear,
}

impl LlamaMlpConfig {
    /// Builds the layer with random weights.
    pub fn init(&self, device: &Device) -> LlamaMlp {
        let linear = |i, o| LlamaLinearConfig::new(i, o).init(device);
        LlamaMlp {
            gate_proj: linear(self.hidden_size, self.intermediate_size),
            up_proj: linear(self.hidden_size, self.intermediate_size),
            down_proj: linear(self.intermediate_size, self.hidden_size),
        }
    }
}

impl LlamaMlp {
    /// # Shapes
    /// - x: `[B, T, D]`
    /// - output: `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // janus-kernels' vectorised SiLU where it applies (burn-flex f32 inference), burn's
        // elsewhere: burn-flex's scalar `exp` made SiLU a measurable part of a decode step's
        // layer (measurements: docs/perf-notes.md §18).
        let gate = janus_kernels::silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate.mul(self.up_proj.forward(x)))
    }
}
