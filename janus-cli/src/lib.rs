#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod device;

use std::path::{Path, PathBuf};

use burn::tensor::Device;

pub use device::{default_device, training_device};

/// The programs allocate through mimalloc. With glibc's allocator every freed
/// block above 32 MiB (a VQ activation at 384², an im2col buffer) goes back to the kernel and the
/// next one is page-faulted and zeroed again; mimalloc keeps freed memory for reuse, which makes
/// SigLIP and the VQ decode faster (measurements: docs/perf-notes.md §10). Library crates leave
/// the choice to the application.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, which the Rust bindings do not name: the option just
/// before `use_numa_nodes` in mimalloc.h (15 in both the v2 and the v3 header).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Tells mimalloc to keep freed memory instead of returning it to the kernel after a delay: the VQ
/// decoder frees and reallocates 75 MB activations back to back, and each fresh block would be
/// page-faulted and zeroed again, a visible share of a VQ decode's time (measurements:
/// docs/perf-notes.md §13). Peak memory is unchanged; memory freed after the peak stays
/// resident until exit. [`default_device`] calls it; no-op without the `mimalloc` feature.
pub fn tune_allocator() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: sets an integer option, which mimalloc reads whenever it considers purging.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
    }
}

/// The shipped shapes model (`models/shapes-janus`, trained from scratch by `janus-shapes`),
/// used when no `--model` is given.
pub fn bundled_model_dir() -> PathBuf {
    // models/ is at the workspace root, one level above this crate.
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .parent()
        .unwrap_or(crate_dir)
        .join("models/shapes-janus")
}

/// Command-line sampling flags shared by the programs. A flag left out keeps the value the
/// model directory recommends (`generation_config.json`), else the library's default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy (argmax). Default: the model's recommendation.
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Seed of the sampler [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// `base` with every flag that was given put over it.
    pub fn apply(&self, base: janus_core::SamplingOptions) -> janus_core::SamplingOptions {
        janus_core::SamplingOptions {
            temperature: self.temperature.unwrap_or(base.temperature),
            top_k: self.top_k.or(base.top_k),
            top_p: self.top_p.or(base.top_p),
            seed: self.seed.unwrap_or(base.seed),
        }
    }
}

/// Loads a model directory behind a spinner, so a multi-gigabyte load does not look hung.
pub fn load_with_spinner(
    dir: &Path,
    options: &janus_core::LoadOptions,
    device: &Device,
) -> Result<janus_core::Janus, janus_core::JanusError> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("loading {}", dir.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let started = std::time::Instant::now();
    let result = janus_core::Janus::load(dir, options, device);
    spinner.finish_and_clear();
    if result.is_ok() {
        eprintln!(
            "loaded {} in {:.1}s",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
    }
    result
}

/// The parameter dtype named on the command line: `f32`, `bf16` or `f16`. The error names the
/// choices; the programs give this function to clap as the argument's `value_parser`.
pub fn parse_dtype(name: &str) -> Result<burn::tensor::DType, String> {
    use burn::tensor::DType;
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        _ => Err(format!("unknown dtype `{name}`: use f32, bf16 or f16")),
    }
}

/// The parameter precision named by `--dtype`: a float dtype, or a quantised tier whose
/// language-model linear layers are stored in GGML blocks while the rest stays in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precision {
    /// Float dtype of the parameters that are not quantised.
    pub dtype: burn::tensor::DType,
    /// The quantised tier, if any.
    pub quant: Option<janus_core::QuantScheme>,
}

impl Precision {
    /// The name [`parse_precision`] takes for it.
    pub fn name(&self) -> &'static str {
        match self.quant {
            Some(q) => q.name(),
            None => dtype_name(self.dtype),
        }
    }

    /// Load options for this precision.
    pub fn load_options(&self) -> janus_core::LoadOptions {
        janus_core::LoadOptions::default()
            .with_dtype(self.dtype)
            .with_quant(self.quant)
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The precision named on the command line: `f32`, `bf16`, `f16`, or the quantised tiers
/// `q8_0` and `q4_k` (docs/quantization.md); clap's `value_parser` for `--dtype`.
pub fn parse_precision(name: &str) -> Result<Precision, String> {
    if let Some(quant) = janus_core::QuantScheme::from_name(name) {
        return Ok(Precision {
            dtype: burn::tensor::DType::F32,
            quant: Some(quant),
        });
    }
    parse_dtype(name)
        .map(|dtype| Precision { dtype, quant: None })
        .map_err(|_| format!("unknown dtype `{name}`: use f32, bf16, f16, q8_0 or q4_k"))
}

/// The name [`parse_dtype`] takes for `dtype` (`f32` for any dtype it does not name).
pub fn dtype_name(dtype: burn::tensor::DType) -> &'static str {
    use burn::tensor::DType;
    match dtype {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_flags_win_over_the_model_defaults() {
        let base = janus_core::SamplingOptions {
            temperature: 0.5,
            top_k: Some(7),
            top_p: None,
            seed: 3,
        };
        assert_eq!(SamplingArgs::default().apply(base.clone()), base);
        let flags = SamplingArgs {
            temperature: Some(0.0),
            top_p: Some(0.9),
            top_k: None,
            seed: Some(11),
        };
        let got = flags.apply(base);
        assert_eq!(
            (got.temperature, got.top_k, got.top_p, got.seed),
            (0.0, Some(7), Some(0.9), 11)
        );
    }

    #[test]
    fn bundled_model_dir_holds_the_shipped_model() {
        assert!(bundled_model_dir().join("config.json").is_file());
    }

    #[test]
    fn dtype_names_round_trip_and_unknown_names_are_refused() {
        for name in ["f32", "bf16", "f16"] {
            assert_eq!(dtype_name(parse_dtype(name).unwrap()), name);
        }
        for name in ["f32", "bf16", "f16", "q8_0", "q4_k"] {
            assert_eq!(parse_precision(name).unwrap().name(), name);
        }
        let q = parse_precision("q4_k").unwrap();
        assert_eq!(q.load_options().quant, Some(janus_core::QuantScheme::Q4K));
        assert_eq!(q.load_options().dtype, burn::tensor::DType::F32);
        assert!(parse_precision("q5_k").unwrap_err().contains("q4_k"));
        let err = parse_dtype("fp8").unwrap_err();
        assert!(err.contains("fp8") && err.contains("bf16"), "{err}");
    }
}
