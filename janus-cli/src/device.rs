//! The device every program runs on, chosen by the crate's backend features: `cuda` wins over
//! `vulkan`, which wins over `wgpu`, which wins over the default CPU backend `flex`. Library
//! crates take a `&Device`; only programs pick one, all through this module.

use burn::tensor::Device;

/// The default device of the backend enabled at build time ([`training_device`] 0), with
/// [`tune_allocator`](crate::tune_allocator) applied.
pub fn default_device() -> Device {
    crate::tune_allocator();
    training_device(0)
}

/// Device `index` of the backend this build was compiled for: CUDA GPU `index` with `cuda`, else
/// Vulkan with `vulkan`, else any GPU wgpu finds with `wgpu`; the CPU backend (flex) otherwise,
/// where every index names the one CPU device. Index 0 is the backend's default adapter (the
/// discrete GPU where there is one).
pub fn training_device(index: usize) -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(index)
    }
    #[cfg(all(feature = "vulkan", not(feature = "cuda")))]
    {
        match index {
            0 => Device::vulkan(Default::default()),
            i => Device::vulkan(burn::tensor::DeviceKind::DiscreteGpu(i)),
        }
    }
    #[cfg(all(feature = "wgpu", not(any(feature = "cuda", feature = "vulkan"))))]
    {
        match index {
            0 => Device::wgpu(Default::default()),
            i => Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)),
        }
    }
    #[cfg(all(
        feature = "flex",
        not(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))
    ))]
    {
        let _ = index;
        Device::flex()
    }
    #[cfg(not(any(
        feature = "flex",
        feature = "cuda",
        feature = "vulkan",
        feature = "wgpu"
    )))]
    compile_error!("enable one backend feature: flex (default), cuda, vulkan or wgpu");
}
