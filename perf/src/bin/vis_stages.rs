//! SigLIP + understanding aligner, or the VQ decoder, alone at the Janus-Pro-1B shape with random
//! weights, run N times: a quick loop for profiling `vision_ms` / `vq_decode_ms` without building
//! the 8 GB language model (docs/perf-notes.md, V-sections).
//!
//! ```sh
//! cargo run --release -p janus-perf --bin vis_stages -- vision|vq [N]
//! ```

use std::time::Instant;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use janus_core::JanusConfig;
use janus_core::janus_adapters::MlpProjectorConfig;

struct Materialise;

impl ModuleMapper for Materialise {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t + 0.0)
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let stage = args.next().unwrap_or_else(|| "vq".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);
    janus_cli::tune_allocator();
    let device = Device::flex();
    device.seed(0);
    let config = JanusConfig::janus_pro_1b();
    let run: Box<dyn Fn()> = match stage.as_str() {
        "vision" => {
            let tower = config.siglip().init(&device)?.map(&mut Materialise);
            let a = &config.aligner;
            let aligner =
                MlpProjectorConfig::from_type_name(&a.projector_type, a.input_dim, a.n_embed)?
                    .with_depth(a.depth)
                    .init(&device)?
                    .map(&mut Materialise);
            let s = config.vision.image_size;
            let x = Tensor::<4>::random([1, 3, s, s], Distribution::Uniform(-1.0, 1.0), &device);
            Box::new(move || {
                let _ = aligner.forward(tower.forward(x.clone())).into_data();
            })
        }
        _ => {
            let vq = config.vq().init(&device)?.map(&mut Materialise);
            let g = config.gen_vision.grid();
            let size = config.gen_vision.codebook_size as i64;
            let codes: Vec<i64> = (0..(g * g) as i64)
                .map(|i| (7919 * i + 13) % size)
                .collect();
            let t = Tensor::<2, Int>::from_data(TensorData::new(codes, [1, g * g]), &device);
            Box::new(move || {
                let _ = vq.decode_codes(t.clone(), (g, g)).unwrap().into_data();
            })
        }
    };
    for i in 0..n {
        let t = Instant::now();
        run();
        println!("{stage} run {i}: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}
