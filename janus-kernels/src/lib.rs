#![doc = include_str!("../README.md")]

pub mod rows;

pub use rows::{MAX_ROWS, WeightLayout};

use burn::tensor::Tensor;

/// `x · Wᵀ` (`OutIn`) or `x · W` (`InOut`) through [`rows::matmul_rows`], when it applies.
///
/// Applies to 1–[`MAX_ROWS`] rows on the burn-flex backend (no autodiff), with `x` and the weight
/// in the same dtype, f32 or f16, and a contiguous weight; the output has `x`'s dtype.
/// Returns `None` otherwise — always without the `flex` feature — and the caller uses burn's
/// own product.
///
/// # Shapes
/// - x: `[rows, d_in]`; weight: `[d_out, d_in]` (`OutIn`) or `[d_in, d_out]` (`InOut`)
/// - output: `[rows, d_out]`
pub fn few_rows_matmul(
    x: &Tensor<2>,
    weight: &Tensor<2>,
    layout: WeightLayout,
) -> Option<Tensor<2>> {
    #[cfg(feature = "flex")]
    {
        flex::few_rows_matmul(x, weight, layout)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, weight, layout);
        None
    }
}

#[cfg(feature = "flex")]
mod flex {
    use super::rows::{Weights, matmul_rows};
    use super::{MAX_ROWS, WeightLayout};
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::{DType, Tensor, TensorData, f16};

    /// Whether the storage can be viewed as elements of `align` bytes (`as_slice` would panic
    /// on a misaligned buffer).
    fn aligned(t: &FlexTensor, align: usize) -> bool {
        t.bytes().as_ptr().align_offset(align) == 0
    }

    pub(super) fn few_rows_matmul(
        x: &Tensor<2>,
        weight: &Tensor<2>,
        layout: WeightLayout,
    ) -> Option<Tensor<2>> {
        let [rows, d_in] = x.dims();
        let [a, b] = weight.dims();
        let d_out = match layout {
            WeightLayout::OutIn if b == d_in => a,
            WeightLayout::InOut if a == d_in => b,
            _ => return None,
        };
        let dtype = x.dtype();
        if rows == 0 || rows > MAX_ROWS || weight.dtype() != dtype {
            return None;
        }
        if !matches!(dtype, DType::F32 | DType::F16) || x.device().is_autodiff() {
            return None;
        }
        let w = weight.clone().try_into_primitive::<Flex>().ok()?;
        let xt = x.clone().try_into_primitive::<Flex>().ok()?.to_contiguous();
        if !aligned(&w, dtype.size()) || !aligned(&xt, dtype.size()) {
            return None;
        }
        let y = match dtype {
            DType::F32 => {
                let xs = xt.as_slice::<f32>()?;
                matmul_rows(xs, rows, Weights::F32(w.as_slice()?), layout, d_in, d_out)?
            }
            _ => {
                let xs: Vec<f32> = xt.as_slice::<f16>()?.iter().map(|v| v.to_f32()).collect();
                matmul_rows(&xs, rows, Weights::F16(w.as_slice()?), layout, d_in, d_out)?
            }
        };
        let data = match dtype {
            DType::F32 => TensorData::new(y, [rows, d_out]),
            _ => TensorData::new(
                y.into_iter().map(f16::from_f32).collect::<Vec<_>>(),
                [rows, d_out],
            ),
        };
        Some(Tensor::from_primitive::<Flex>(FlexTensor::from_data(data)))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use burn::tensor::Device;

        fn close(a: &Tensor<2>, b: &Tensor<2>, tol: f32) {
            let a: Vec<f32> = a.clone().cast(DType::F32).into_data().try_to_vec().unwrap();
            let b: Vec<f32> = b.clone().cast(DType::F32).into_data().try_to_vec().unwrap();
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
            }
        }

        #[test]
        fn matches_burns_product_for_both_layouts_and_dtypes() {
            let device = Device::flex();
            let w = Tensor::<2>::random([96, 40], burn::tensor::Distribution::Default, &device);
            for dtype in [DType::F32, DType::F16] {
                let w = w.clone().cast(dtype);
                for rows in [1usize, 2, 5, 8] {
                    let x = Tensor::<2>::random(
                        [rows, 40],
                        burn::tensor::Distribution::Default,
                        &device,
                    )
                    .cast(dtype);
                    let y = few_rows_matmul(&x, &w, WeightLayout::OutIn).expect("applies");
                    assert_eq!(y.dtype(), dtype);
                    // Reference in f32 from the same (rounded) inputs: burn's f16 product
                    // accumulates in f16, the kernel in f32.
                    let (x32, w32) = (x.clone().cast(DType::F32), w.clone().cast(DType::F32));
                    close(&y, &x32.clone().matmul(w32.clone().transpose()), 1e-3);
                    let wt = w.clone().transpose();
                    // A transposed view is not contiguous: refused, burn's product is used.
                    assert!(few_rows_matmul(&x, &wt, WeightLayout::InOut).is_none());
                    let wio = Tensor::<2>::from_data(wt.clone().into_data(), &device).cast(dtype);
                    let y = few_rows_matmul(&x, &wio, WeightLayout::InOut).expect("applies");
                    close(&y, &x32.matmul(w32.transpose()), 1e-3);
                }
            }
        }

        #[test]
        fn declines_what_it_does_not_handle() {
            let device = Device::flex();
            let w = Tensor::<2>::ones([6, 4], &device);
            let nine = Tensor::<2>::ones([9, 4], &device);
            assert!(few_rows_matmul(&nine, &w, WeightLayout::OutIn).is_none());
            let wrong = Tensor::<2>::ones([1, 5], &device);
            assert!(few_rows_matmul(&wrong, &w, WeightLayout::OutIn).is_none());
            let bf = Tensor::<2>::ones([1, 4], &device).cast(DType::BF16);
            assert!(
                few_rows_matmul(&bf, &w.clone().cast(DType::BF16), WeightLayout::OutIn).is_none()
            );
            let mixed = Tensor::<2>::ones([1, 4], &device).cast(DType::F16);
            assert!(few_rows_matmul(&mixed, &w, WeightLayout::OutIn).is_none());
            let ad = device.autodiff();
            let xa = Tensor::<2>::ones([1, 4], &ad);
            let wa = Tensor::<2>::ones([6, 4], &ad);
            assert!(few_rows_matmul(&xa, &wa, WeightLayout::OutIn).is_none());
        }
    }
}
