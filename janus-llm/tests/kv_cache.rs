//! The cache must be invisible: any split of a sequence into prefill + steps gives the logits of
//! one full pass, with and without left padding.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use janus_llm::{LlamaConfig, LlamaForCausalLM, LlmError};

fn tiny(device: &Device) -> LlamaForCausalLM {
    device.seed(7);
    LlamaConfig::new()
        .with_vocab_size(50)
        .with_hidden_size(32)
        .with_intermediate_size(48)
        .with_num_hidden_layers(2)
        .with_num_attention_heads(4)
        .with_num_key_value_heads(Some(2))
        .with_max_position_embeddings(64)
        .init(device)
        .unwrap()
}

fn ids(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let t = rows[0].len();
    let flat: Vec<i64> = rows.concat();
    Tensor::from_data(TensorData::new(flat, [rows.len(), t]), device)
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    a.sub(b).abs().max().into_scalar::<f32>()
}

/// Both tests run on the autodiff device too: burn's attention there takes only as many
/// key/value heads as query heads, so a GQA model must repeat them (it once returned garbage).
fn devices() -> [Device; 2] {
    [Device::flex(), Device::flex().autodiff()]
}

#[test]
fn prefill_then_steps_equals_full_pass() {
    for device in devices() {
        prefill_then_steps_on(device);
    }
}

fn prefill_then_steps_on(device: Device) {
    let llm = tiny(&device);
    let rows = vec![
        vec![3, 9, 4, 11, 27, 8, 1, 30],
        vec![5, 6, 7, 8, 9, 10, 11, 12],
    ];
    let full = llm.forward(ids(&rows, &device), None, None).unwrap();

    let mut cache = llm.model.new_cache(2, 16);
    let prompt: Vec<Vec<i64>> = rows.iter().map(|r| r[..5].to_vec()).collect();
    let mut parts = vec![
        llm.forward(ids(&prompt, &device), None, Some(&mut cache))
            .unwrap(),
    ];
    for i in 5..8 {
        let step: Vec<Vec<i64>> = rows.iter().map(|r| vec![r[i]]).collect();
        parts.push(
            llm.forward(ids(&step, &device), None, Some(&mut cache))
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), 8);
    let diff = max_abs_diff(Tensor::cat(parts, 1), full);
    assert!(
        diff < 1e-4,
        "{device:?}: cached decode differs from full pass by {diff}"
    );
}

#[test]
fn left_padding_does_not_change_a_row() {
    for device in devices() {
        left_padding_on(device);
    }
}

fn left_padding_on(device: Device) {
    let llm = tiny(&device);
    let alone = llm
        .forward(ids(&[vec![4, 5, 6, 7]], &device), None, None)
        .unwrap();

    let rows = vec![vec![0, 0, 4, 5, 6, 7], vec![1, 2, 3, 4, 5, 6]];
    let mask = vec![vec![false, false, true, true, true, true], vec![true; 6]];
    let mut cache = llm.model.new_cache(2, 12);
    let prefill = llm
        .forward(ids(&rows, &device), Some(&mask), Some(&mut cache))
        .unwrap();
    let padded_row = prefill.clone().slice([0..1, 2..6]);
    assert!(max_abs_diff(padded_row, alone.clone()) < 1e-4);
    assert!(
        !prefill.clone().is_nan().any().into_scalar::<bool>(),
        "padding produced NaN"
    );

    // The next step of the padded row equals the unpadded sequence continued.
    let step = llm
        .forward(ids(&[vec![9], vec![9]], &device), None, Some(&mut cache))
        .unwrap();
    let longer = llm
        .forward(ids(&[vec![4, 5, 6, 7, 9]], &device), None, None)
        .unwrap();
    let diff = max_abs_diff(step.slice([0..1, 0..1]), longer.slice([0..1, 4..5]));
    assert!(diff < 1e-4, "step after padded prefill differs by {diff}");
}

/// Casts every parameter, as the loader does for `--dtype f16|bf16`.
struct CastTo(DType);

impl ModuleMapper for CastTo {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// Half-precision weights keep a half-precision cache; the steps must still match a full pass
/// (which attends over the layers' f32 keys and values) to within that rounding, padding and GQA
/// included. With the workspace's `flex` feature janus-kernels reads the cache; without it
/// (`cargo test -p janus-llm`) burn's ops run in the cache's dtype.
#[test]
fn half_precision_cache_decodes_like_a_full_pass() {
    let device = Device::flex();
    for dtype in [DType::F16, DType::BF16] {
        let llm = tiny(&device).map(&mut CastTo(dtype));
        let rows = vec![vec![0, 3, 9, 4, 11, 27, 8], vec![5, 6, 7, 8, 9, 10, 11]];
        let mask = vec![
            vec![false, true, true, true, true, true, true],
            vec![true; 7],
        ];
        let full = llm.forward(ids(&rows, &device), Some(&mask), None).unwrap();
        assert_eq!(full.dtype(), dtype);
        let mut cache = llm.model.new_cache(2, 8);
        let prompt: Vec<Vec<i64>> = rows.iter().map(|r| r[..4].to_vec()).collect();
        let prompt_mask: Vec<Vec<bool>> = mask.iter().map(|r| r[..4].to_vec()).collect();
        let mut parts = vec![
            llm.forward(ids(&prompt, &device), Some(&prompt_mask), Some(&mut cache))
                .unwrap(),
        ];
        for i in 4..7 {
            let step: Vec<Vec<i64>> = rows.iter().map(|r| vec![r[i]]).collect();
            parts.push(
                llm.forward(ids(&step, &device), None, Some(&mut cache))
                    .unwrap(),
            );
        }
        let cached = Tensor::cat(parts, 1).cast(DType::F32);
        let full = full.cast(DType::F32);
        // Padded positions carry no meaning; compare row 0 from position 1 on, and row 1.
        let diff = max_abs_diff(
            cached.clone().slice([0..1, 1..7]),
            full.clone().slice([0..1, 1..7]),
        )
        .max(max_abs_diff(
            cached.slice([1..2, 0..7]),
            full.slice([1..2, 0..7]),
        ));
        let scale = full_scale(&llm, &rows, &device);
        assert!(
            diff < 2e-2 * scale,
            "{dtype:?} on {device:?}: cached decode differs from full pass by {diff} (logits up to {scale})"
        );
    }
}

fn full_scale(llm: &LlamaForCausalLM, rows: &[Vec<i64>], device: &Device) -> f32 {
    let logits = llm.forward(ids(rows, device), None, None).unwrap();
    logits
        .cast(DType::F32)
        .abs()
        .max()
        .into_scalar::<f32>()
        .max(1.0)
}

#[test]
fn reset_and_truncate_forget_entries() {
    let device = Device::flex();
    let llm = tiny(&device);
    let a = ids(&[vec![1, 2, 3]], &device);
    let mut cache = llm.model.new_cache(1, 8);
    let first = llm.forward(a.clone(), None, Some(&mut cache)).unwrap();
    cache.reset();
    assert!(cache.is_empty());
    let again = llm.forward(a, None, Some(&mut cache)).unwrap();
    assert!(max_abs_diff(first, again) < 1e-6);

    // Truncate back to the prompt, then take another branch.
    llm.forward(ids(&[vec![7]], &device), None, Some(&mut cache))
        .unwrap();
    cache.truncate(3);
    assert_eq!(cache.next_positions(), vec![3]);
    let branch = llm
        .forward(ids(&[vec![8]], &device), None, Some(&mut cache))
        .unwrap();
    let full = llm
        .forward(ids(&[vec![1, 2, 3, 8]], &device), None, None)
        .unwrap();
    assert!(max_abs_diff(branch, full.slice([0..1, 3..4])) < 1e-4);
}

#[test]
fn bad_input_is_an_error() {
    let device = Device::flex();
    let llm = tiny(&device);
    let mut cache = llm.model.new_cache(1, 4);
    let err = llm.forward(ids(&[vec![1, 2, 3, 4, 5]], &device), None, Some(&mut cache));
    assert!(matches!(
        err,
        Err(LlmError::CacheFull {
            capacity: 4,
            needed: 5
        })
    ));
    let err = llm.forward(ids(&[vec![1; 65]], &device), None, None);
    assert!(matches!(
        err,
        Err(LlmError::ContextTooLong {
            length: 65,
            max: 64
        })
    ));
    let err = llm.forward(ids(&[vec![1, 2]], &device), Some(&[vec![true]]), None);
    assert!(matches!(err, Err(LlmError::MaskShape { .. })));
    let mut two = llm.model.new_cache(2, 4);
    let err = llm.forward(ids(&[vec![1]], &device), None, Some(&mut two));
    assert!(matches!(
        err,
        Err(LlmError::BatchMismatch {
            expected: 2,
            found: 1
        })
    ));
    let bad = LlamaConfig::new()
        .with_hidden_size(30)
        .with_num_attention_heads(4);
    assert!(matches!(bad.init(&device), Err(LlmError::InvalidConfig(_))));
}
