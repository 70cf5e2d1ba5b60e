//! Sampling: greedy, temperature, top-k, top-p, the seeded stream and its errors.

use burn::tensor::{DType, Device, Tensor, TensorData, bf16};
use janus_llm::{LlmError, Sampler, SamplingOptions, sample_from_uniform};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

fn logits(rows: &[Vec<f32>]) -> Tensor<2> {
    let vocab = rows[0].len();
    let flat: Vec<f32> = rows.concat();
    Tensor::from_data(TensorData::new(flat, [rows.len(), vocab]), &Device::flex())
}

fn pinned(rows: &[Vec<f32>], options: &SamplingOptions, uniforms: &[f64]) -> Vec<i64> {
    sample_from_uniform(logits(rows), options, uniforms).unwrap()
}

/// Test data: uniform numbers in `[0, 1)` from a seeded stream.
fn uniforms(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        .collect()
}

/// Test data: logits in `[-scale, scale)`.
fn random_row(rng: &mut ChaCha8Rng, vocab: usize, scale: f32) -> Vec<f32> {
    uniforms(rng, vocab)
        .into_iter()
        .map(|u| (u as f32 * 2.0 - 1.0) * scale)
        .collect()
}

fn first_argmax(row: &[f32]) -> i64 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i64
}

#[test]
fn greedy_picks_first_argmax() {
    let rows = vec![
        vec![0.1, 3.0, -2.0, 3.0, 1.0],
        vec![-5.0, -1.0, -1.0, -3.0, -1.0],
        vec![7.0, 7.0, 7.0, 7.0, 7.0],
    ];
    let ids = pinned(&rows, &SamplingOptions::greedy(), &[0.0, 0.5, 0.99]);
    assert_eq!(ids, vec![1, 1, 0]);
}

#[test]
fn temperature_zero_is_greedy() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let rows: Vec<Vec<f32>> = (0..4).map(|_| random_row(&mut rng, 1000, 5.0)).collect();
    let expected: Vec<i64> = rows.iter().map(|r| first_argmax(r)).collect();
    let mut sampler = Sampler::new(SamplingOptions::default().with_temperature(0.0)).unwrap();
    for _ in 0..5 {
        assert_eq!(sampler.sample(logits(&rows)).unwrap(), expected);
    }
    // top-k and top-p do not matter when greedy.
    let options = SamplingOptions::greedy()
        .with_top_k(Some(3))
        .with_top_p(Some(0.5));
    assert_eq!(pinned(&rows, &options, &[0.9; 4]), expected);
}

#[test]
fn top_k_one_is_greedy_at_any_temperature() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let rows: Vec<Vec<f32>> = (0..3).map(|_| random_row(&mut rng, 500, 2.0)).collect();
    let expected: Vec<i64> = rows.iter().map(|r| first_argmax(r)).collect();
    for temperature in [0.01, 0.7, 1.0, 5.0, 1e6] {
        let options = SamplingOptions::default()
            .with_temperature(temperature)
            .with_top_k(Some(1));
        for seed in 0..10 {
            let mut sampler = Sampler::new(options.clone().with_seed(seed)).unwrap();
            assert_eq!(sampler.sample(logits(&rows)).unwrap(), expected);
        }
    }
}

#[test]
fn tiny_top_p_keeps_only_the_best() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let rows: Vec<Vec<f32>> = (0..2).map(|_| random_row(&mut rng, 300, 1.0)).collect();
    let expected: Vec<i64> = rows.iter().map(|r| first_argmax(r)).collect();
    let options = SamplingOptions::default()
        .with_temperature(3.0)
        .with_top_p(Some(1e-9));
    for u in [0.0, 0.3, 0.999_999] {
        assert_eq!(pinned(&rows, &options, &[u, u]), expected);
    }
}

#[test]
fn inverse_cdf_walks_ids_in_order() {
    // Probabilities 0.75, 0.25.
    let rows = vec![vec![3f32.ln(), 0.0]];
    let options = SamplingOptions::default();
    assert_eq!(pinned(&rows, &options, &[0.0]), vec![0]);
    assert_eq!(pinned(&rows, &options, &[0.74]), vec![0]);
    assert_eq!(pinned(&rows, &options, &[0.76]), vec![1]);
    assert_eq!(pinned(&rows, &options, &[0.999_999]), vec![1]);
    // Temperature 2 flattens to sqrt(3) : 1, so the split moves to 0.634.
    let hot = SamplingOptions::default().with_temperature(2.0);
    assert_eq!(pinned(&rows, &hot, &[0.62]), vec![0]);
    assert_eq!(pinned(&rows, &hot, &[0.65]), vec![1]);
}

#[test]
fn top_k_keeps_ties_with_the_kth() {
    let rows = vec![vec![1.0, 2.0, 0.0, 2.0, 1.5]];
    let options = SamplingOptions::default().with_top_k(Some(1));
    // Both 2.0s survive with half the mass each.
    assert_eq!(pinned(&rows, &options, &[0.49]), vec![1]);
    assert_eq!(pinned(&rows, &options, &[0.51]), vec![3]);
    // k = 3 keeps 2.0, 2.0, 1.5 and never 1.0 or 0.0.
    let options = SamplingOptions::default().with_top_k(Some(3));
    for u in [0.0, 0.2, 0.5, 0.8, 0.999] {
        let id = pinned(&rows, &options, &[u])[0];
        assert!([1, 3, 4].contains(&id), "u={u} gave {id}");
    }
    // k larger than the vocabulary keeps everything.
    let options = SamplingOptions::default().with_top_k(Some(100));
    assert_eq!(pinned(&rows, &options, &[0.0]), vec![0]);
}

#[test]
fn top_p_keeps_the_smallest_sufficient_set() {
    // Probabilities 0.5, 0.3, 0.2.
    let rows = vec![vec![0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()]];
    let keep_one = SamplingOptions::default().with_top_p(Some(0.45));
    assert_eq!(pinned(&rows, &keep_one, &[0.99]), vec![0]);
    // 0.6 needs the two best: renormalised 5/8, 3/8.
    let keep_two = SamplingOptions::default().with_top_p(Some(0.6));
    assert_eq!(pinned(&rows, &keep_two, &[0.6]), vec![0]);
    assert_eq!(pinned(&rows, &keep_two, &[0.65]), vec![1]);
    assert_eq!(pinned(&rows, &keep_two, &[0.999]), vec![1]);
    // 1.0 keeps all.
    let keep_all = SamplingOptions::default().with_top_p(Some(1.0));
    assert_eq!(pinned(&rows, &keep_all, &[0.999]), vec![2]);
    // Top-p applies to what top-k left: of {0.5, 0.3} renormalised, 0.6 keeps only the best.
    let both = SamplingOptions::default()
        .with_top_k(Some(2))
        .with_top_p(Some(0.6));
    assert_eq!(pinned(&rows, &both, &[0.999]), vec![0]);
}

#[test]
fn multinomial_frequency_matches_the_softmax() {
    let rows = vec![vec![3f32.ln(), 0.0]];
    let mut sampler = Sampler::new(SamplingOptions::default().with_seed(7)).unwrap();
    let draws = 4000;
    let zeros = (0..draws)
        .filter(|_| sampler.sample(logits(&rows)).unwrap()[0] == 0)
        .count();
    let freq = zeros as f64 / draws as f64;
    // Standard deviation ~0.007.
    assert!((freq - 0.75).abs() < 0.03, "frequency of id 0: {freq}");
}

#[test]
fn same_seed_same_ids_other_seed_other_ids() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let steps: Vec<Vec<Vec<f32>>> = (0..30)
        .map(|_| (0..2).map(|_| random_row(&mut rng, 1000, 0.5)).collect())
        .collect();
    let run = |options: SamplingOptions| -> Vec<i64> {
        let mut sampler = Sampler::new(options).unwrap();
        steps
            .iter()
            .flat_map(|rows| sampler.sample(logits(rows)).unwrap())
            .collect()
    };
    let options = SamplingOptions::default()
        .with_top_k(Some(200))
        .with_top_p(Some(0.95));
    let a = run(options.clone());
    assert_eq!(a, run(options.clone()));
    assert_ne!(a, run(options.clone().with_seed(43)));
    assert!(a.iter().all(|id| (0..1000).contains(id)));
}

#[test]
fn large_vocabulary_matches_a_naive_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let vocab = 102_400;
    let rows: Vec<Vec<f32>> = vec![
        random_row(&mut rng, vocab, 20.0),
        random_row(&mut rng, vocab, 1.0),
        // Many ties and some masked ids.
        random_row(&mut rng, vocab, 8.0)
            .into_iter()
            .map(|v| {
                if v < -7.0 {
                    f32::NEG_INFINITY
                } else {
                    v.round()
                }
            })
            .collect(),
    ];
    let cases = [
        SamplingOptions::default(),
        SamplingOptions::default().with_top_k(Some(50)),
        SamplingOptions::default().with_top_p(Some(0.9)),
        SamplingOptions::default()
            .with_temperature(0.7)
            .with_top_k(Some(50))
            .with_top_p(Some(0.9)),
        SamplingOptions::default()
            .with_temperature(1.3)
            .with_top_p(Some(0.5)),
    ];
    for options in &cases {
        for _ in 0..3 {
            let u = uniforms(&mut rng, rows.len());
            let expected: Vec<i64> = rows
                .iter()
                .zip(&u)
                .map(|(row, &u)| reference(row, options, u))
                .collect();
            assert_eq!(pinned(&rows, options, &u), expected, "{options:?}, u={u:?}");
        }
    }
}

/// The documented semantics with full sorts and no shortcuts (no NaN or +inf).
fn reference(row: &[f32], options: &SamplingOptions, u: f64) -> i64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sorted = row.to_vec();
    sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let threshold = options
        .top_k
        .filter(|&k| k < row.len())
        .map_or(f32::NEG_INFINITY, |k| sorted[k - 1]);
    let mut kept: Vec<(usize, f32, f64)> = row
        .iter()
        .enumerate()
        .filter(|(_, v)| **v >= threshold)
        .map(|(i, &v)| {
            let w = ((f64::from(v) - f64::from(max)) / options.temperature).exp();
            (i, v, w)
        })
        .collect();
    if let Some(p) = options.top_p.filter(|p| *p < 1.0) {
        let total: f64 = kept.iter().map(|c| c.2).sum();
        kept.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        let mut cumulative = 0.0;
        let mut n = kept.len();
        for (i, c) in kept.iter().enumerate() {
            cumulative += c.2;
            if cumulative >= p * total {
                n = i + 1;
                break;
            }
        }
        kept.truncate(n);
        kept.sort_by_key(|c| c.0);
    }
    let total: f64 = kept.iter().map(|c| c.2).sum();
    let mut cumulative = 0.0;
    for c in &kept {
        cumulative += c.2;
        if cumulative > u * total {
            return c.0 as i64;
        }
    }
    kept.last().unwrap().0 as i64
}

#[test]
fn infinite_logits() {
    let inf = f32::INFINITY;
    let neg = f32::NEG_INFINITY;
    // -inf is masked out.
    let masked = vec![vec![neg, 0.0, neg]];
    for u in [0.0, 0.5, 0.999] {
        assert_eq!(pinned(&masked, &SamplingOptions::default(), &[u]), vec![1]);
    }
    assert_eq!(pinned(&masked, &SamplingOptions::greedy(), &[0.0]), vec![1]);
    // +inf tokens share all the mass.
    let rows = vec![vec![0.0, inf, 5.0, inf]];
    let options = SamplingOptions::default();
    assert_eq!(pinned(&rows, &options, &[0.3]), vec![1]);
    assert_eq!(pinned(&rows, &options, &[0.7]), vec![3]);
    assert_eq!(pinned(&rows, &SamplingOptions::greedy(), &[0.7]), vec![1]);
    let top_p = options.clone().with_top_p(Some(0.5));
    assert_eq!(pinned(&rows, &top_p, &[0.9]), vec![1]);
    // Nothing to draw.
    let err = sample_from_uniform(logits(&[vec![neg; 4]]), &options, &[0.5]).unwrap_err();
    assert_eq!(err, LlmError::NoCandidates { row: 0 });
}

#[test]
fn nan_fails_its_row() {
    let rows = vec![vec![0.0, 1.0, 2.0], vec![0.0, f32::NAN, 2.0]];
    for options in [SamplingOptions::default(), SamplingOptions::greedy()] {
        let err = sample_from_uniform(logits(&rows), &options, &[0.5, 0.5]).unwrap_err();
        assert_eq!(err, LlmError::NonFiniteLogits { row: 1 });
        let mut sampler = Sampler::new(options).unwrap();
        assert_eq!(
            sampler.sample(logits(&rows)).unwrap_err(),
            LlmError::NonFiniteLogits { row: 1 }
        );
    }
}

#[test]
fn invalid_options_are_rejected() {
    let bad = [
        SamplingOptions::default().with_temperature(-0.5),
        SamplingOptions::default().with_temperature(f64::NAN),
        SamplingOptions::default().with_temperature(f64::INFINITY),
        SamplingOptions::default().with_top_k(Some(0)),
        SamplingOptions::default().with_top_p(Some(0.0)),
        SamplingOptions::default().with_top_p(Some(-0.1)),
        SamplingOptions::default().with_top_p(Some(1.5)),
        SamplingOptions::default().with_top_p(Some(f64::NAN)),
    ];
    for options in bad {
        let err = options.validate().unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::InvalidTemperature(_) | LlmError::InvalidTopK | LlmError::InvalidTopP(_)
            ),
            "{options:?}: {err}"
        );
        assert!(Sampler::new(options.clone()).is_err());
        assert!(sample_from_uniform(logits(&[vec![0.0, 1.0]]), &options, &[0.5]).is_err());
    }
    assert_eq!(
        SamplingOptions::default().with_temperature(-1.0).validate(),
        Err(LlmError::InvalidTemperature(-1.0))
    );
    assert_eq!(
        SamplingOptions::default().with_top_k(Some(0)).validate(),
        Err(LlmError::InvalidTopK)
    );
    assert_eq!(
        SamplingOptions::default().with_top_p(Some(2.0)).validate(),
        Err(LlmError::InvalidTopP(2.0))
    );
    for good in [
        SamplingOptions::default(),
        SamplingOptions::greedy(),
        SamplingOptions::default().with_top_p(Some(1.0)),
        SamplingOptions::default().with_top_k(Some(1)),
    ] {
        assert_eq!(good.validate(), Ok(()));
    }
}

#[test]
fn bad_uniforms_are_rejected() {
    let rows = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
    let options = SamplingOptions::default();
    assert_eq!(
        sample_from_uniform(logits(&rows), &options, &[0.5]).unwrap_err(),
        LlmError::UniformCount {
            expected: 2,
            found: 1
        }
    );
    for value in [1.0, -0.1, f64::INFINITY] {
        assert_eq!(
            sample_from_uniform(logits(&rows), &options, &[0.5, value]).unwrap_err(),
            LlmError::InvalidUniform { row: 1, value }
        );
    }
    let err = sample_from_uniform(logits(&rows), &options, &[f64::NAN, 0.5]).unwrap_err();
    assert!(matches!(err, LlmError::InvalidUniform { row: 0, .. }));
}

#[test]
fn bf16_logits_work() {
    let values = [0.5f32, 3.0, -1.0, 2.0, 3.0f32.ln(), 0.0];
    let data = TensorData::new(
        values
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect::<Vec<_>>(),
        [3, 2],
    );
    let tensor: Tensor<2> = Tensor::from_data(data, (&Device::flex(), DType::BF16));
    assert_eq!(tensor.dtype(), DType::BF16);
    let greedy = sample_from_uniform(tensor.clone(), &SamplingOptions::greedy(), &[0.0; 3]);
    assert_eq!(greedy.unwrap(), vec![1, 1, 0]);
    // bf16(ln 3) = 1.09375, so p(0) = 1/(1 + e^-1.09375) ~ 0.749.
    let pinned = sample_from_uniform(
        tensor.clone(),
        &SamplingOptions::default(),
        &[0.0, 0.0, 0.74],
    );
    assert_eq!(pinned.unwrap(), vec![0, 0, 0]);
    let mut sampler = Sampler::new(SamplingOptions::default().with_top_k(Some(1))).unwrap();
    assert_eq!(sampler.sample(tensor).unwrap(), vec![1, 1, 0]);
}

#[test]
fn empty_batch_gives_no_ids() {
    let tensor: Tensor<2> =
        Tensor::from_data(TensorData::new(Vec::<f32>::new(), [0, 5]), &Device::flex());
    let mut sampler = Sampler::new(SamplingOptions::default()).unwrap();
    assert_eq!(sampler.sample(tensor).unwrap(), Vec::<i64>::new());
}
