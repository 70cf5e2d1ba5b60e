//! Shared glue for the examples and benchmarks: backend selection by cargo feature.
//!
//! Library crates take a `&Device`; only binaries pick one. `cuda` wins over `vulkan`, which
//! wins over the default CPU backend `flex`.

use burn::tensor::Device;

/// The device of the backend enabled at build time.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(0)
    }
    #[cfg(all(feature = "vulkan", not(feature = "cuda")))]
    {
        Device::vulkan(Default::default())
    }
    #[cfg(all(feature = "flex", not(any(feature = "cuda", feature = "vulkan"))))]
    {
        Device::flex()
    }
    #[cfg(not(any(feature = "flex", feature = "cuda", feature = "vulkan")))]
    compile_error!("enable one backend feature: flex (default), cuda or vulkan");
}

/// The bundled tiny checkpoint (random weights), used when no `--model` is given.
pub fn bundled_model_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-janus")
}
