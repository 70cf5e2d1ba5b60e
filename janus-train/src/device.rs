//! The device the binaries train on, chosen by the crate's backend features.

use burn::tensor::Device;

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
    #[cfg(not(any(feature = "cuda", feature = "vulkan", feature = "wgpu")))]
    {
        let _ = index;
        Device::flex()
    }
}
