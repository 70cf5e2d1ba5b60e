//! `MlpProjector`: the understanding `aligner` and the generation `gen_aligner`.

use core::str::FromStr;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::error::{AdapterError, non_zero};

/// Architecture of an [`MlpProjector`], the `projector_type` of a Janus config.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ProjectorType {
    /// `identity`: no parameters, output = input.
    Identity,
    /// `linear`: one Linear `input_dim → n_embed`.
    Linear,
    /// `mlp_gelu`: Linear `input_dim → n_embed`, then `depth − 1` × [GELU(erf), Linear
    /// `n_embed → n_embed`].
    MlpGelu,
}

impl ProjectorType {
    /// The name used by the reference's `projector_type`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Linear => "linear",
            Self::MlpGelu => "mlp_gelu",
        }
    }
}

impl FromStr for ProjectorType {
    type Err = AdapterError;

    /// Parses the reference's names; anything else (including the unused
    /// `low_high_hybrid_split_mlp_gelu`) is [`AdapterError::UnknownProjectorType`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "identity" => Ok(Self::Identity),
            "linear" => Ok(Self::Linear),
            "mlp_gelu" => Ok(Self::MlpGelu),
            other => Err(AdapterError::UnknownProjectorType(other.to_owned())),
        }
    }
}

/// Configuration to create an [`MlpProjector`] using the [init function](MlpProjectorConfig::init).
///
/// Field names follow `aligner_config.params` / `gen_aligner_config.params`.
#[derive(Config, Debug)]
pub struct MlpProjectorConfig {
    /// Architecture.
    pub projector_type: ProjectorType,
    /// Input feature size (1024 for the understanding aligner, 8 for the generation aligner).
    pub input_dim: usize,
    /// Output feature size, the LLM hidden size D.
    pub n_embed: usize,
    /// Number of Linear layers of `mlp_gelu` (the reference defaults to 1; Janus uses 2).
    #[config(default = 1)]
    pub depth: usize,
}

/// Projects features into the LLM embedding space.
///
/// `layers[k]` is the reference's `layers.{2k}` for `mlp_gelu` (odd Sequential indices are the
/// parameter-free GELUs), `layers` itself (no index) for `linear`, and empty for `identity`.
/// A GELU (exact, erf) sits between consecutive Linears.
#[derive(Module, Debug)]
pub struct MlpProjector {
    /// The Linear layers, applied in order with a GELU between each pair.
    pub layers: Vec<Linear>,
}

impl MlpProjectorConfig {
    /// Config from the reference's string `projector_type`.
    ///
    /// # Errors
    ///
    /// [`AdapterError::UnknownProjectorType`] for an unsupported name.
    pub fn from_type_name(
        projector_type: &str,
        input_dim: usize,
        n_embed: usize,
    ) -> Result<Self, AdapterError> {
        Ok(Self::new(projector_type.parse()?, input_dim, n_embed))
    }

    /// Number of Linear layers the projector will hold.
    pub fn num_linears(&self) -> usize {
        match self.projector_type {
            ProjectorType::Identity => 0,
            ProjectorType::Linear => 1,
            ProjectorType::MlpGelu => self.depth,
        }
    }

    /// Initialize a new [`MlpProjector`].
    ///
    /// # Errors
    ///
    /// [`AdapterError::Zero`] if `input_dim` or `n_embed` is zero (for a projector with
    /// weights), or if `depth` is zero for `mlp_gelu`.
    pub fn init(&self, device: &Device) -> Result<MlpProjector, AdapterError> {
        if self.projector_type == ProjectorType::Identity {
            return Ok(MlpProjector { layers: Vec::new() });
        }
        let input_dim = non_zero("input_dim", self.input_dim)?;
        let n_embed = non_zero("n_embed", self.n_embed)?;
        let count = non_zero("depth", self.num_linears())?;
        let layers = (0..count)
            .map(|k| {
                let d_in = if k == 0 { input_dim } else { n_embed };
                LinearConfig::new(d_in, n_embed).init(device)
            })
            .collect();
        Ok(MlpProjector { layers })
    }
}

impl MlpProjector {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[..., input_dim]`
    /// - output: `[..., n_embed]` (`[..., input_dim]` for `identity`)
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.layers.iter().enumerate().fold(x, |x, (k, linear)| {
            let x = if k == 0 { x } else { janus_kernels::gelu(x) };
            crate::linear::forward(linear, x)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{DType, Distribution, FloatDType, TensorData, Tolerance};

    fn set(linear: &mut Linear, weight: Tensor<2>, bias: Tensor<1>) {
        linear.weight = Param::from_tensor(weight);
        linear.bias = Some(Param::from_tensor(bias));
    }

    #[test]
    fn shapes_per_type() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 5, 8], Distribution::Default, &device);
        for (kind, depth, linears) in [
            (ProjectorType::Identity, 1, 0),
            (ProjectorType::Linear, 1, 1),
            (ProjectorType::MlpGelu, 1, 1),
            (ProjectorType::MlpGelu, 2, 2),
            (ProjectorType::MlpGelu, 3, 3),
        ] {
            let proj = MlpProjectorConfig::new(kind, 8, 16)
                .with_depth(depth)
                .init(&device)
                .unwrap();
            assert_eq!(proj.layers.len(), linears, "{kind:?} depth {depth}");
            let expected = if kind == ProjectorType::Identity {
                8
            } else {
                16
            };
            assert_eq!(proj.forward(x.clone()).dims(), [2, 5, expected]);
        }
    }

    /// `mlp_gelu` depth 2 with hand-set weights:
    /// x = [1, -2] → layer0 (W0ᵀ = [[1, 0], [0, 1]] + b0 = [0, 1]) → [1, -1]
    /// → erf-GELU → [0.8413447, -0.1586553] → layer1 (y = [h0 + h1, 2·h0] + [0.5, 0]).
    /// The tanh approximation would give [1.182384, 1.682384], off by ~3e-4.
    #[test]
    fn hand_computed_mlp_gelu() {
        let device = Device::flex();
        let mut proj = MlpProjectorConfig::new(ProjectorType::MlpGelu, 2, 2)
            .with_depth(2)
            .init(&device)
            .unwrap();
        // burn Linear weights are [in, out].
        set(
            &mut proj.layers[0],
            Tensor::from_floats([[1.0, 0.0], [0.0, 1.0]], &device),
            Tensor::from_floats([0.0, 1.0], &device),
        );
        set(
            &mut proj.layers[1],
            Tensor::from_floats([[1.0, 2.0], [1.0, 0.0]], &device),
            Tensor::from_floats([0.5, 0.0], &device),
        );
        let out = proj.forward(Tensor::<2>::from_floats([[1.0, -2.0]], &device));
        let (g1, gm1) = (0.841_344_7_f32, -0.158_655_3_f32);
        let expected = TensorData::from([[g1 + gm1 + 0.5, 2.0 * g1]]);
        out.into_data()
            .assert_approx_eq::<f32>(&expected, Tolerance::absolute(1e-5));
    }

    #[test]
    fn no_activation_after_the_last_linear() {
        let device = Device::flex();
        let mut proj = MlpProjectorConfig::new(ProjectorType::Linear, 1, 1)
            .init(&device)
            .unwrap();
        set(
            &mut proj.layers[0],
            Tensor::from_floats([[1.0]], &device),
            Tensor::from_floats([0.0], &device),
        );
        let out = proj.forward(Tensor::<1>::from_floats([-3.0], &device));
        out.into_data()
            .assert_approx_eq::<f32>(&TensorData::from([-3.0]), Tolerance::default());
    }

    #[test]
    fn projector_type_names() {
        assert_eq!("mlp_gelu".parse(), Ok(ProjectorType::MlpGelu));
        assert_eq!("linear".parse(), Ok(ProjectorType::Linear));
        assert_eq!("identity".parse(), Ok(ProjectorType::Identity));
        assert_eq!(
            "low_high_hybrid_split_mlp_gelu".parse::<ProjectorType>(),
            Err(AdapterError::UnknownProjectorType(
                "low_high_hybrid_split_mlp_gelu".into()
            ))
        );
        for t in [
            ProjectorType::Identity,
            ProjectorType::Linear,
            ProjectorType::MlpGelu,
        ] {
            assert_eq!(t.as_str().parse(), Ok(t));
        }
        assert!(MlpProjectorConfig::from_type_name("mlp", 8, 16).is_err());
    }

    #[test]
    fn bad_sizes_are_typed_errors() {
        let device = Device::flex();
        let zero_depth = MlpProjectorConfig::new(ProjectorType::MlpGelu, 8, 16).with_depth(0);
        assert_eq!(
            zero_depth.init(&device).unwrap_err(),
            AdapterError::Zero { name: "depth" }
        );
        assert_eq!(
            MlpProjectorConfig::new(ProjectorType::Linear, 0, 16)
                .init(&device)
                .unwrap_err(),
            AdapterError::Zero { name: "input_dim" }
        );
    }

    #[test]
    fn runs_in_bf16() {
        let device = Device::flex();
        let mut proj = MlpProjectorConfig::new(ProjectorType::MlpGelu, 4, 8)
            .with_depth(2)
            .init(&device)
            .unwrap();
        for linear in &mut proj.layers {
            linear.weight = Param::from_tensor(linear.weight.val().cast(FloatDType::BF16));
            let bias = linear.bias.take().unwrap().val().cast(FloatDType::BF16);
            linear.bias = Some(Param::from_tensor(bias));
        }
        let x = Tensor::<2>::ones([3, 4], &device).cast(FloatDType::BF16);
        assert_eq!(proj.forward(x).dtype(), DType::BF16);
    }
}
