use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{DType, Device, Distribution, Tensor};
use janus_kernels::WeightLayout;
use janus_kernels::quant::{QuantError, QuantKind, QuantMatrix};
use std::sync::Arc;

/// Configuration of [`LlamaLinear`].
#[derive(Config, Debug)]
pub struct LlamaLinearConfig {
    /// Input width.
    pub d_input: usize,
    /// Output width.
    pub d_output: usize,
}

/// A bias-free linear layer that keeps the checkpoint's `[out, in]` weight layout.
///
/// burn's `Linear` stores `[in, out]`; on the CPU backend a one-row product then streams the
/// weight well below the memory bandwidth, while `x · Wᵀ` over an `[out, in]` weight reads
/// contiguous rows and gets close to it (measurements: docs/perf-notes.md §2, §3). Decoding is
/// bound by exactly that product, so the LLaMA layers keep PyTorch's layout — which also loads
/// without a transpose.
///
/// When the weight carries a burn LoRA adapter (`Param::adapter`), `lora_dropout` applies
/// PEFT's LoRA dropout: the low-rank branch sees `drop(x)` while the base weight sees `x`.
///
/// [`LlamaLinear::quantize`] replaces the weight by GGML blocks ([`QuantMatrix`]) for
/// inference: `weight` is then an empty `[0, d_input]` tensor and the product runs on the
/// quantised bytes.
#[derive(Module, Debug)]
pub struct LlamaLinear {
    /// `[d_output, d_input]`, as in the checkpoint (`[0, d_input]` once quantised).
    pub weight: Param<Tensor<2>>,
    /// Dropout probability on the input of the LoRA branch, while training (0: none).
    pub lora_dropout: f64,
    /// The weight in GGML blocks, once quantised; shared by clones of the model.
    #[module(skip)]
    quant: Option<Arc<QuantMatrix>>,
}

impl LlamaLinearConfig {
    /// Builds the layer with burn's default linear initialisation.
    pub fn init(&self, device: &Device) -> LlamaLinear {
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        };
        LlamaLinear {
            weight: init.init_with(
                [self.d_output, self.d_input],
                Some(self.d_input),
                Some(self.d_output),
                device,
            ),
            lora_dropout: 0.0,
            quant: None,
        }
    }
}

impl LlamaLinear {
    /// A layer over `weight` (`[d_output, d_input]`).
    pub fn from_weight(weight: Tensor<2>) -> Self {
        LlamaLinear {
            weight: Param::from_tensor(weight),
            lora_dropout: 0.0,
            quant: None,
        }
    }

    /// Output width (`d_output`), read without initialising the weight.
    pub fn d_output(&self) -> usize {
        match &self.quant {
            Some(q) => q.rows(),
            None => self.weight.lazy_shape()[0],
        }
    }

    /// Input width (`d_input`), read without initialising the weight.
    pub fn d_input(&self) -> usize {
        self.weight.lazy_shape()[1]
    }

    /// The quantised weight, when [`LlamaLinear::quantize`] or [`LlamaLinear::set_quantized`]
    /// replaced the float one.
    pub fn quantized(&self) -> Option<&QuantMatrix> {
        self.quant.as_deref()
    }

    /// Whether the float weight holds values (loaded or drawn) and has not been quantised.
    pub fn has_float_weight(&self) -> bool {
        self.quant.is_none() && self.weight.is_initialized()
    }

    /// Quantises the weight into `kind` ([`QuantKind::for_row_width`]: Q4_K falls back to Q8_0
    /// on rows that are not whole super-blocks) and frees the float weight. Returns the format
    /// used. Already quantised: nothing changes.
    pub fn quantize(&mut self, kind: QuantKind) -> Result<QuantKind, QuantError> {
        if let Some(q) = &self.quant {
            return Ok(q.kind());
        }
        let shape = self.weight.lazy_shape();
        let (rows, cols) = (shape[0], shape[1]);
        let kind = kind.for_row_width(cols)?;
        let values = self.weight.val().cast(DType::F32).into_data();
        let values: Vec<f32> = match values.try_into_vec::<f32>() {
            Ok(v) => v,
            Err(e) => unreachable!("an f32 tensor's data is f32: {e:?}"),
        };
        let q = QuantMatrix::quantize(kind, &values, rows, cols)?;
        self.set_quantized(q);
        Ok(kind)
    }

    /// Installs an already quantised `[d_output, d_input]` weight (read from a quantised model
    /// directory), freeing the float one.
    pub fn set_quantized(&mut self, weight: QuantMatrix) {
        let device = self.weight.lazy_device();
        let empty = Tensor::<2>::zeros([0, weight.cols()], &device);
        self.weight = Param::initialized(self.weight.id, empty);
        self.quant = Some(Arc::new(weight));
    }

    /// `x · Wᵀ`, through [`janus_kernels::nn::linear`]: up to [`janus_kernels::MAX_ROWS`] rows (a decode
    /// step, the two CFG rows of image generation) by a product bound by reading the weight, more
    /// rows (prefill) by one matrix product.
    ///
    /// `x` may be f32 over a half-precision weight (janus-llm keeps its activations in f32):
    /// the output then has `x`'s dtype.
    ///
    /// # Shapes
    /// - x: `[..., d_input]`
    /// - output: `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if let Some(q) = &self.quant {
            return janus_kernels::nn::quant_linear(x, q);
        }
        let y = janus_kernels::nn::linear(x.clone(), &self.weight.val(), None, WeightLayout::OutIn);
        match self.lora_dropout_branch(x) {
            Some(correction) => {
                let dims = y.dims();
                y + correction.reshape(dims)
            }
            None => y,
        }
    }

    /// PEFT computes `x·Wᵀ + s·drop(x)·(a·b)ᵀ`; burn's adapter has already folded `s·a·b` into the
    /// weight (`x·W_effᵀ`), so what is missing is `s·(drop(x) − x)·bᵀ·aᵀ`, a rank-`r` product.
    /// Only while training the adapter: an autodiff device and a trainable factor.
    fn lora_dropout_branch<const D: usize>(&self, x: Tensor<D>) -> Option<Tensor<2>> {
        if self.lora_dropout <= 0.0 || !x.device().is_autodiff() {
            return None;
        }
        let adapter = self.weight.adapter()?;
        let a = adapter.a.val();
        if !a.is_require_grad() {
            return None;
        }
        let d_input = self.d_input();
        let rows = x.shape().num_elements() / d_input.max(1);
        let x = x.reshape([rows, d_input]);
        let keep = 1.0 - self.lora_dropout;
        let dropped = x.clone() * x.random_like(Distribution::Bernoulli(keep)) / keep;
        // a: [d_output, r], b: [r, d_input] for an [out, in] weight.
        let low = (dropped - x).matmul(adapter.b.val().transpose());
        Some(low.matmul(a.transpose()) * adapter.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn computes_x_times_w_transposed_for_any_row_count() {
        let device = Device::flex();
        let layer = LlamaLinear::from_weight(Tensor::from_data(
            TensorData::from([[1.0f32, 2.0, 3.0], [0.0, -1.0, 0.5]]),
            &device,
        ));
        for rows in [1usize, 2, 5, 9] {
            let x: Vec<f32> = (0..rows * 3).map(|i| i as f32).collect();
            let input = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, rows, 3]), &device);
            let y: Vec<f32> = layer.forward(input).into_data().try_to_vec().unwrap();
            for r in 0..rows {
                let v = &x[r * 3..r * 3 + 3];
                assert_eq!(y[r * 2], v[0] + 2.0 * v[1] + 3.0 * v[2]);
                assert_eq!(y[r * 2 + 1], -v[1] + 0.5 * v[2]);
            }
        }
    }

    /// Sets every parameter from its shape: the base weight to 0, the LoRA factors to 1.
    struct Fill;

    impl burn::module::ModuleMapper for Fill {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| {
                let shape = t.shape();
                let value = if shape[D - 1] == 1000 && shape[0] == 3 {
                    0.0
                } else {
                    1.0
                };
                let filled = Tensor::full(shape, value, &t.device());
                if t.is_require_grad() {
                    filled.require_grad()
                } else {
                    filled
                }
            })
        }
    }

    #[test]
    fn lora_dropout_feeds_a_dropped_input_to_the_low_rank_branch_only_while_training() {
        use burn::module::Lora;
        let (d_in, d_out, rows) = (1000, 3, 4);
        let forward = |device: &Device, dropout: f64| -> Vec<f32> {
            device.seed(7);
            let mut layer = LlamaLinearConfig::new(d_in, d_out)
                .init(device)
                .apply_lora(Lora::new(1, 1.0))
                .map(&mut Fill);
            layer.lora_dropout = dropout;
            let x = Tensor::<2>::ones([rows, d_in], device);
            layer.forward(x).into_data().try_to_vec::<f32>().unwrap()
        };
        // W = 0 and a·b = ones, so without dropout every output is Σx = 1000; with it, the
        // branch sees drop(x) (entries 0 or 2 at p = 0.5) and outputs Σ drop(x) per row.
        let plain = Device::flex();
        assert!(
            forward(&plain, 0.5).iter().all(|v| *v == 1000.0),
            "inference: no dropout"
        );
        let train = Device::flex().autodiff();
        assert!(forward(&train, 0.0).iter().all(|v| *v == 1000.0));
        let y = forward(&train, 0.5);
        for row in y.chunks(d_out) {
            assert!(
                row.iter().all(|v| *v == row[0]),
                "one mask per input row: {row:?}"
            );
            assert_eq!(row[0] % 2.0, 0.0, "a sum of 0s and 2s: {row:?}");
            assert!((row[0] - 1000.0).abs() < 200.0, "about half kept: {row:?}");
        }
        assert!(
            y.iter().any(|v| *v != 1000.0),
            "dropout had no effect: {y:?}"
        );
    }
}
