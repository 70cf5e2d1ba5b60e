//! Parity of the image side with the reference PyTorch implementation, over every fixture
//! under `JANUS_FIXTURES` (default: the project's `tests/fixtures`): the VQ tokenizer and the
//! generation input embedding (`parity_vq`), and CFG generation with the KV cache, VQ decoding
//! and the uint8 output (`parity_generation`).

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::weight_dirs;
use janus_core::processor::Message;
use janus_core::{Janus, JanusModel, LoadOptions, to_rgb_images};
use janus_testutil::{Golden, model_dirs, read_goldens, rel_err, test_device};

const TOL: f64 = 1e-4;

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

fn ints<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

fn float4(g: &Golden, device: &Device) -> Tensor<4> {
    let s = &g.shape;
    Tensor::from_data(
        TensorData::new(g.floats.clone(), [s[0], s[1], s[2], s[3]]),
        device,
    )
}

fn int2(g: &Golden, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(g.ints.clone(), [g.shape[0], g.shape[1]]),
        device,
    )
}

fn check(what: &str, out: &[f32], reference: &Golden) -> f64 {
    let err = rel_err(out, &reference.floats);
    assert!(err <= TOL, "{what}: rel err {err:.3e} > {TOL}");
    err
}

fn options(weights: &std::path::Path) -> LoadOptions {
    LoadOptions {
        weights_dir: Some(weights.to_path_buf()),
        ..Default::default()
    }
}

/// VQ encode (quantised latent and codes), decode, decode of random codes, and the
/// generation-input embedding of those codes, for every checkpoint copy of every fixture.
#[test]
fn parity_vq() {
    let device = test_device();
    let mut checked = 0;
    for dir in model_dirs() {
        let path = dir.join("goldens/vq.safetensors");
        if !path.exists() {
            continue;
        }
        let g = read_goldens(&path);
        for weights in weight_dirs(&dir) {
            let what = |name: &str| format!("{} [{}] {name}", dir.display(), weights.display());
            let (model, _, _) = JanusModel::load(&dir, &options(&weights), &device).unwrap();
            let vq = &model.gen_vision_model;

            let enc = vq.encode(float4(&g["image"], &device)).unwrap();
            assert_eq!(enc.quant.dims().to_vec(), g["quant"].shape, "quant shape");
            let e_quant = check(&what("quant"), &floats(enc.quant), &g["quant"]);
            assert_eq!(enc.codes.dims().to_vec(), g["codes"].shape, "codes shape");
            assert_eq!(ints(enc.codes), g["codes"].ints, "{}", what("codes"));

            let decoded = vq.decode(float4(&g["quant"], &device)).unwrap();
            assert_eq!(decoded.dims().to_vec(), g["decoded"].shape, "decoded shape");
            let e_dec = check(&what("decoded"), &floats(decoded), &g["decoded"]);

            let codes = &g["random_codes"];
            let grid = g["quant"].shape[2..4].to_vec();
            let random = vq
                .decode_codes(int2(codes, &device), (grid[0], grid[1]))
                .unwrap();
            assert_eq!(random.dims().to_vec(), g["random_decoded"].shape);
            let e_rand = check(
                &what("random_decoded"),
                &floats(random),
                &g["random_decoded"],
            );

            let embeds = model.embed_image_codes(int2(codes, &device));
            assert_eq!(embeds.dims().to_vec(), g["gen_img_embeds"].shape);
            let e_emb = check(
                &what("gen_img_embeds"),
                &floats(embeds),
                &g["gen_img_embeds"],
            );
            println!(
                "parity_vq {}: quant {e_quant:.3e}, decoded {e_dec:.3e}, random_decoded \
                 {e_rand:.3e}, gen_img_embeds {e_emb:.3e}",
                what("")
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no fixture has goldens/vq.safetensors");
}

/// The CFG prompt rows, the guided logits of every step when the reference's codes are fed
/// back (teacher forcing through the KV cache), the VQ decode of those codes and the uint8
/// images, for every checkpoint copy of every fixture.
#[test]
fn parity_generation() {
    let device = test_device();
    let mut checked = 0;
    for dir in model_dirs() {
        let path = dir.join("goldens/generation.safetensors");
        if !path.exists() {
            continue;
        }
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("goldens/cases.json")).unwrap())
                .unwrap();
        let case = &cases["generation"];
        let conversation: Vec<Message> =
            serde_json::from_value(case["conversation"].clone()).unwrap();
        let parallel = case["parallel_size"].as_u64().unwrap() as usize;
        let cfg_weight = case["cfg_weight"].as_f64().unwrap();
        let g = read_goldens(&path);

        for weights in weight_dirs(&dir) {
            let what = |name: &str| format!("{} [{}] {name}", dir.display(), weights.display());
            let janus = Janus::load(&dir, &options(&weights), &device).unwrap();

            // Prompt: template string, ids, and the interleaved CFG rows.
            assert_eq!(
                janus.processor.generation_prompt(&conversation).unwrap(),
                case["prompt"].as_str().unwrap(),
                "{}",
                what("prompt")
            );
            let batch = janus
                .generation_batch(std::slice::from_ref(&conversation), parallel)
                .unwrap();
            let rows = &g["prompt_rows"];
            assert_eq!(
                vec![batch.rows(), batch.len],
                rows.shape,
                "{}",
                what("prompt_rows shape")
            );
            assert_eq!(batch.ids, rows.ints, "{}", what("prompt_rows"));
            assert!(batch.padding.is_none(), "a single prompt needs no mask");

            // Teacher-forced guided logits.
            let tokens = &g["tokens"];
            let (p, n) = (tokens.shape[0], tokens.shape[1]);
            assert_eq!(p, parallel);
            assert_eq!(n, janus.codes_per_image(), "{}", what("codes per image"));
            if let Some(num) = case["image_token_num_per_image"].as_u64() {
                assert_eq!(n, num as usize);
            }
            let codes: Vec<Vec<i64>> = tokens.ints.chunks(n).map(<[i64]>::to_vec).collect();
            let logits = janus
                .model
                .teacher_force_image_codes(&batch, &codes, cfg_weight)
                .unwrap();
            assert_eq!(logits.dims().to_vec(), g["cfg_logits"].shape);
            let e_logits = check(&what("cfg_logits"), &floats(logits), &g["cfg_logits"]);

            // VQ decode of the reference's codes, then the uint8 conversion.
            let decoded = janus
                .model
                .gen_vision_model
                .decode_codes(int2(tokens, &device), janus.image_grid())
                .unwrap();
            assert_eq!(decoded.dims().to_vec(), g["decoded"].shape);
            let e_dec = check(&what("decoded"), &floats(decoded.clone()), &g["decoded"]);

            let images = to_rgb_images(decoded);
            let mut got = Vec::new();
            for image in &images {
                got.extend_from_slice(image.as_raw());
            }
            let want = &g["image_u8"];
            let side = want.shape[1];
            assert_eq!(images.len(), want.shape[0]);
            assert_eq!(
                (images[0].height() as usize, images[0].width() as usize),
                (side, want.shape[2])
            );
            let max_diff = got
                .iter()
                .zip(&want.ints)
                .map(|(a, b)| (i64::from(*a) - b).abs())
                .max()
                .unwrap();
            assert!(max_diff <= 1, "{}: max diff {max_diff}", what("image_u8"));
            let exact = got
                .iter()
                .zip(&want.ints)
                .filter(|(a, b)| i64::from(**a) == **b)
                .count();

            // The pipeline's own decode path gives the same pictures.
            let decoded_again = janus
                .model
                .decode_image_codes(&codes, janus.image_grid())
                .unwrap();
            assert_eq!(decoded_again, images, "{}", what("decode_image_codes"));

            println!(
                "parity_generation {}: prompt_rows identical, cfg_logits {e_logits:.3e}, \
                 decoded {e_dec:.3e}, image_u8 max |diff| {max_diff} ({exact}/{} exact)",
                what(""),
                got.len()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no fixture has goldens/generation.safetensors");
}
