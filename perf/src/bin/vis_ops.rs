//! Per-op timings at the shapes of SigLIP-L/16@384 and the VQ-16 decoder on burn-flex, to see
//! which ops carry vision_ms and vq_decode_ms (docs/perf-notes.md, V-sections).
//!
//! ```sh
//! cargo run --release -p janus-perf --bin vis_ops [-- FILTER [check]]
//! ```
//!
//! Besides burn's own ops it times the alternative formulations tried in the notes (3×3 conv as
//! 9 or 3 GEMMs over shifted views, full im2col, NHWC windows through `unfold`, row-wise 1×3
//! conv; explicit attention; GroupNorm through matrix-product sums); `check` compares them with
//! the reference op.

use std::time::Instant;

use burn::nn::conv::Conv2dConfig;
use burn::nn::{GroupNormConfig, LayerNormConfig, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{gelu, silu};
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, PadMode};
use burn::tensor::{Device, Distribution, Tensor};
use janus_kernels::profiling::{ConvAlgorithm, conv3x3_with};

fn time<const D: usize>(name: &str, flops: f64, reps: usize, f: impl Fn() -> Tensor<D>) {
    let filter = std::env::args().nth(1).unwrap_or_default();
    if !name.contains(&filter) {
        return;
    }
    let reps = std::env::var("VIS_OPS_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(reps);
    let _ = f().into_data();
    let mut best = f64::MAX;
    let (cpu_start, wall_start) = (cpu_seconds(), Instant::now());
    for _ in 0..reps {
        let t = Instant::now();
        let _ = f().into_data();
        best = best.min(t.elapsed().as_secs_f64());
    }
    // How many cores the op kept busy on average (idle time is serial parts or waits).
    let cores = cpu_seconds()
        .zip(cpu_start)
        .map(|(end, start)| (end - start) / wall_start.elapsed().as_secs_f64());
    let cores = cores.map_or(String::new(), |c| format!("  {c:.2} cores"));
    if flops > 0.0 {
        println!(
            "{name:<48} {:>9.2} ms  {:>7.1} GFLOP/s{cores}",
            best * 1e3,
            flops / best / 1e9
        );
    } else {
        println!("{name:<48} {:>9.2} ms{cores}", best * 1e3);
    }
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    janus_cli::tune_allocator();
    let device = Device::flex();
    let rnd2 = |s: [usize; 2]| Tensor::<2>::random(s, Distribution::Default, &device);
    let n = 576;
    for (k, m) in [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)] {
        let x = rnd2([n, k]);
        let w = rnd2([k, m]);
        let wt = rnd2([m, k]);
        let fl = 2.0 * (n * k * m) as f64;
        time(&format!("matmul {n}x{k} . {k}x{m}"), fl, 3, || {
            x.clone().matmul(w.clone())
        });
        time(&format!("matmul {n}x{k} . ({m}x{k})T"), fl, 3, || {
            x.clone().matmul(wt.clone().transpose())
        });
    }
    // A large square product: about the best burn-flex's GEMM reaches on this CPU.
    let big = rnd2([2048, 2048]);
    time(
        "matmul 2048x2048 . 2048x2048 (reference)",
        2.0 * 2048f64.powi(3),
        3,
        || big.clone().matmul(big.clone()),
    );
    // The SigLIP linears as janus-siglip runs them: burn's `Linear` (product, then the bias).
    for (k, m) in [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)] {
        let linear = LinearConfig::new(k, m).init(&device);
        let x = rnd2([n, k]).reshape([1, n, k]);
        let fl = 2.0 * (n * k * m) as f64;
        time(&format!("linear+bias {n}x{k} -> {m}"), fl, 3, || {
            linear.forward(x.clone())
        });
        let bias = linear.bias.as_ref().map(|b| b.val());
        time(
            &format!("kernels linear+bias {n}x{k} -> {m}"),
            fl,
            3,
            || janus_kernels::linear(x.clone(), &linear.weight.val(), bias.as_ref()),
        );
    }
    let h = rnd2([n, 4096]).reshape([1, n, 4096]);
    let bias = rnd2([1, 4096]).reshape([1, 1, 4096]);
    time("bias add 576x4096", 0.0, 5, || h.clone() + bias.clone());
    time("gelu 576x4096", 0.0, 5, || gelu(h.clone()));
    time("kernels gelu 576x4096", 0.0, 5, || {
        janus_kernels::gelu(h.clone())
    });
    let ln = LayerNormConfig::new(1024).with_epsilon(1e-6).init(&device);
    let xl = rnd2([n, 1024]).reshape([1, n, 1024]);
    time("layernorm 576x1024", 0.0, 5, || ln.forward(xl.clone()));
    let q = Tensor::<4>::random([1, 16, n, 64], Distribution::Default, &device);
    let fl = 4.0 * (16 * n * n * 64) as f64;
    time("attention 1x16x576x64", fl, 5, || {
        attention(
            q.clone(),
            q.clone(),
            q.clone(),
            None,
            None,
            AttentionModuleOptions::default(),
        )
    });
    let k = Tensor::<4>::random([1, 16, n, 64], Distribution::Default, &device);
    let v = Tensor::<4>::random([1, 16, n, 64], Distribution::Default, &device);
    let fused = attention(
        q.clone(),
        k.clone(),
        v.clone(),
        None,
        None,
        AttentionModuleOptions::default(),
    );
    let manual = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| {
        burn::tensor::activation::softmax(q.mul_scalar(0.125).matmul(k.swap_dims(2, 3)), 3)
            .matmul(v)
    };
    let d: f32 = (manual(q.clone(), k.clone(), v.clone()) - fused)
        .abs()
        .max()
        .into_scalar();
    println!("check manual attention: max abs diff {d}");
    time("attention manual 1x16x576x64", fl, 5, || {
        manual(q.clone(), k.clone(), v.clone())
    });
    let fused_rows = rnd2([n, 3072]).reshape([1, n, 3072]);
    time("kernels attention_qkv 1x576x3072 16 heads", fl, 5, || {
        janus_kernels::attention_qkv(fused_rows.clone(), 16)
    });
    let qkv = rnd2([n, 3072]).reshape([1, n, 3, 16, 64]);
    time("qkv permute+narrow+reshape (q only)", 0.0, 5, || {
        qkv.clone()
            .permute([2, 0, 3, 1, 4])
            .narrow(0, 0, 1)
            .reshape([1, 16, n, 64])
    });

    // VQ decoder shapes.
    for (c, s) in [(512, 24), (256, 48), (256, 96), (128, 192), (128, 384)] {
        let x = Tensor::<4>::random([1, c, s, s], Distribution::Default, &device);
        let conv = Conv2dConfig::new([c, c], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let fl = 2.0 * 9.0 * (c * c * s * s) as f64;
        time(&format!("conv3x3 {c}ch {s}x{s}"), fl, 2, || {
            conv.forward(x.clone())
        });
        let wt = conv.weight.val();
        let bias = conv.bias.as_ref().map(|b| b.val());
        for (name, algo) in [
            ("direct", ConvAlgorithm::Direct),
            ("winograd", ConvAlgorithm::Winograd),
        ] {
            let run = || conv3x3_with(x.clone(), &wt, bias.as_ref(), algo);
            time(&format!("conv3x3 kernels {name} {c}ch {s}x{s}"), fl, 2, run);
            if std::env::args().nth(2).is_some() {
                let d = (run() - conv.forward(x.clone()))
                    .abs()
                    .max()
                    .into_scalar::<f32>();
                println!("check conv3x3 kernels {name} {c}ch {s}x{s}: max abs diff {d}");
            }
        }
        if s <= 48 && std::env::args().nth(2).is_some() {
            let r =
                conv.forward(x.clone()) - conv.bias.as_ref().unwrap().val().reshape([1, c, 1, 1]);
            for (name, y) in [
                ("9gemm", conv_9gemm(wt.clone(), x.clone())),
                ("3gemm", conv_3gemm(wt.clone(), x.clone())),
                ("im2col", conv_im2col(wt.clone(), x.clone())),
                ("nhwc3", conv_nhwc3(wt.clone(), x.clone())),
                ("rows", conv_rows(&rows_weight(wt.clone()), x.clone())),
                ("nhwc1", conv_nhwc1(wt.clone(), x.clone())),
            ] {
                let d: f32 = (y - r.clone()).abs().max().into_scalar();
                println!("check {name} {c}ch {s}: max abs diff {d}");
            }
        }
        time(&format!("conv3x3 9gemm {c}ch {s}x{s}"), fl, 2, || {
            conv_9gemm(wt.clone(), x.clone())
        });
        time(&format!("conv3x3 3gemm {c}ch {s}x{s}"), fl, 2, || {
            conv_3gemm(wt.clone(), x.clone())
        });
        time(&format!("conv3x3 im2col {c}ch {s}x{s}"), fl, 2, || {
            conv_im2col(wt.clone(), x.clone())
        });
        let conv_rows_w = rows_weight(wt.clone());
        time(&format!("conv3x3 rows {c}ch {s}x{s}"), fl, 2, || {
            conv_rows(&conv_rows_w, x.clone())
        });
        time(&format!("conv3x3 nhwc3 {c}ch {s}x{s}"), fl, 2, || {
            conv_nhwc3(wt.clone(), x.clone())
        });
        time(&format!("conv3x3 nhwc1 {c}ch {s}x{s}"), fl, 2, || {
            conv_nhwc1(wt.clone(), x.clone())
        });
        let gn = GroupNormConfig::new(32, c).with_epsilon(1e-6).init(&device);
        time(&format!("groupnorm {c}ch {s}x{s}"), 0.0, 3, || {
            gn.forward(x.clone())
        });
        time(&format!("silu {c}ch {s}x{s}"), 0.0, 3, || silu(x.clone()));
        time(&format!("gn+silu {c}ch {s}x{s}"), 0.0, 3, || {
            silu(gn.forward(x.clone()))
        });
        let (g, bt) = (
            gn.gamma.as_ref().unwrap().val(),
            gn.beta.as_ref().unwrap().val(),
        );
        time(&format!("gn2+silu {c}ch {s}x{s}"), 0.0, 3, || {
            silu(gn2(x.clone(), g.clone(), bt.clone(), 32, 1e-6))
        });
        time(&format!("gn2 {c}ch {s}x{s}"), 0.0, 3, || {
            gn2(x.clone(), g.clone(), bt.clone(), 32, 1e-6)
        });
        if std::env::args().nth(2).is_some() {
            let d: f32 = (gn2(x.clone(), g.clone(), bt.clone(), 32, 1e-6) - gn.forward(x.clone()))
                .abs()
                .max()
                .into_scalar();
            println!("check gn2 {c}ch {s}: max abs diff {d}");
            let r64 = gn2(
                x.clone().cast(burn::tensor::FloatDType::F64),
                g.clone().cast(burn::tensor::FloatDType::F64),
                bt.clone().cast(burn::tensor::FloatDType::F64),
                32,
                1e-6,
            );
            let e2: f64 = (gn2(x.clone(), g.clone(), bt.clone(), 32, 1e-6)
                .cast(burn::tensor::FloatDType::F64)
                - r64.clone())
            .abs()
            .max()
            .into_scalar();
            let e1: f64 = (gn.forward(x.clone()).cast(burn::tensor::FloatDType::F64) - r64)
                .abs()
                .max()
                .into_scalar();
            println!("check vs f64: burn-nn GroupNorm {e1:.2e}, gn2 {e2:.2e}");
        }
        time(&format!("add {c}ch {s}x{s}"), 0.0, 3, || {
            x.clone() + x.clone()
        });
    }
    for (c, s) in [(512, 24), (256, 48), (256, 96), (128, 192)] {
        let x = Tensor::<4>::random([1, c, s, s], Distribution::Default, &device);
        time(&format!("nearest2x expand {c}ch {s}x{s}"), 0.0, 3, || {
            x.clone()
                .reshape([1, c, s, 1, s, 1])
                .expand([1, c, s, 2, s, 2])
                .reshape([1, c, 2 * s, 2 * s])
        });
        let opts =
            burn::tensor::ops::InterpolateOptions::new(burn::tensor::ops::InterpolateMode::Nearest)
                .with_scale_factor([2.0, 2.0]);
        time(
            &format!("nearest2x interpolate {c}ch {s}x{s}"),
            0.0,
            3,
            || burn::tensor::module::interpolate(x.clone(), opts.clone()),
        );
        if std::env::args().nth(2).is_some() {
            let a = x
                .clone()
                .reshape([1, c, s, 1, s, 1])
                .expand([1, c, s, 2, s, 2])
                .reshape([1, c, 2 * s, 2 * s]);
            let d: f32 = (burn::tensor::module::interpolate(x.clone(), opts.clone()) - a)
                .abs()
                .max()
                .into_scalar();
            println!("check interpolate {c}ch {s}: max abs diff {d}");
        }
    }
}

fn padded_flat(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    x.pad([(1, 2), (1, 1)], PadMode::Constant(0.0))
        .reshape([b, c, (h + 3) * (w + 2)])
}

/// The sum of the per-tap products, added left to right.
fn sum_all(parts: Vec<Tensor<3>>) -> Tensor<3> {
    parts
        .into_iter()
        .reduce(|a, b| a + b)
        .expect("at least one tap")
}

/// `[b, cout, h·(w + 2)]` rows over the padded width back to `[b, cout, h, w]`.
fn crop_padded(y: Tensor<3>, h: usize, w: usize) -> Tensor<4> {
    let [b, cout, _] = y.dims();
    y.reshape([b, cout, h, w + 2])
        .slice([0..b, 0..cout, 0..h, 0..w])
}

fn conv_9gemm(weight: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
    let [b, cin, h, w] = x.dims();
    let cout = weight.dims()[0];
    let wp = w + 2;
    let l = h * wp;
    let xp = padded_flat(x);
    let mut parts = Vec::new();
    for kh in 0..3 {
        for kw in 0..3 {
            let wk = weight
                .clone()
                .slice([0..cout, 0..cin, kh..kh + 1, kw..kw + 1])
                .reshape([1, cout, cin]);
            let off = kh * wp + kw;
            let y = wk.matmul(xp.clone().slice([0..b, 0..cin, off..off + l]));
            parts.push(y);
        }
    }
    crop_padded(sum_all(parts), h, w)
}

fn conv_3gemm(weight: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
    let [b, cin, h, w] = x.dims();
    let cout = weight.dims()[0];
    let wp = w + 2;
    let l = h * wp;
    let lc = (h + 2) * wp;
    let xp = padded_flat(x);
    let col = Tensor::cat(
        (0..3)
            .map(|kw| {
                xp.clone()
                    .slice([0..b, 0..cin, kw..kw + lc])
                    .unsqueeze_dim::<4>(2)
            })
            .collect(),
        2,
    )
    .reshape([b, cin * 3, lc]);
    let mut parts = Vec::new();
    for kh in 0..3 {
        let wk = weight
            .clone()
            .slice([0..cout, 0..cin, kh..kh + 1, 0..3])
            .reshape([1, cout, cin * 3]);
        let off = kh * wp;
        let y = wk.matmul(col.clone().slice([0..b, 0..cin * 3, off..off + l]));
        parts.push(y);
    }
    crop_padded(sum_all(parts), h, w)
}

fn conv_im2col(weight: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
    let [b, cin, h, w] = x.dims();
    let cout = weight.dims()[0];
    let wp = w + 2;
    let l = h * wp;
    let xp = padded_flat(x);
    let mut views = Vec::new();
    for kh in 0..3 {
        for kw in 0..3 {
            let off = kh * wp + kw;
            views.push(
                xp.clone()
                    .slice([0..b, 0..cin, off..off + l])
                    .unsqueeze_dim::<4>(2),
            );
        }
    }
    let col = Tensor::cat(views, 2).reshape([b, cin * 9, l]);
    crop_padded(weight.reshape([1, cout, cin * 9]).matmul(col), h, w)
}

/// NHWC windows: rows of the unfolded flat padded image are the 3 horizontal taps of all channels.
fn conv_nhwc3(weight: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
    let [b, cin, h, w] = x.dims();
    let cout = weight.dims()[0];
    let wp = w + 2;
    let l = h * wp;
    let xp = x
        .permute([0, 2, 3, 1])
        .pad([(1, 2), (1, 1), (0, 0)], PadMode::Constant(0.0))
        .reshape([b, (h + 3) * wp * cin]);
    let win = xp.unfold::<3, _>(1, 3 * cin, cin); // [b, (h+3)wp - 2, 3cin]
    let mut parts = Vec::new();
    for kh in 0..3 {
        let wk = weight
            .clone()
            .slice([0..cout, 0..cin, kh..kh + 1, 0..3])
            .reshape([cout, cin, 3])
            .permute([2, 1, 0])
            .reshape([1, 3 * cin, cout]);
        let xk = win.clone().slice([0..b, kh * wp..kh * wp + l, 0..3 * cin]);
        let y = xk.matmul(wk);
        parts.push(y);
    }
    sum_all(parts)
        .reshape([b, h, wp, cout])
        .slice([0..b, 0..h, 0..w, 0..cout])
        .permute([0, 3, 1, 2])
}

/// NHWC with the 3 vertical taps concatenated on channels: one GEMM with K = 9·cin.
fn conv_nhwc1(weight: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
    let [b, cin, h, w] = x.dims();
    let cout = weight.dims()[0];
    let wp = w + 2;
    let l = h * wp;
    let xp = x
        .permute([0, 2, 3, 1])
        .pad([(1, 2), (1, 1), (0, 0)], PadMode::Constant(0.0)); // [b, h+3, wp, cin]
    let x3 = Tensor::cat(
        (0..3)
            .map(|kh| xp.clone().slice([0..b, kh..kh + h + 1, 0..wp, 0..cin]))
            .collect(),
        3,
    ); // [b, h+1, wp, 3cin], channel index kh*cin + c
    let flat = x3.reshape([b, (h + 1) * wp * 3 * cin]);
    let win = flat.unfold::<3, _>(1, 9 * cin, 3 * cin); // [b, (h+1)wp - 2, 9cin]: (kw, kh, c)
    let wk = weight
        .permute([3, 2, 1, 0]) // [kw, kh, cin, cout]
        .reshape([1, 9 * cin, cout]);
    win.slice([0..b, 0..l, 0..9 * cin])
        .matmul(wk)
        .reshape([b, h, wp, cout])
        .slice([0..b, 0..h, 0..w, 0..cout])
        .permute([0, 3, 1, 2])
}

/// Weight for `conv_rows`: `[cout, 3·cin, 1, 3]` with input channel `kh·cin + c`.
fn rows_weight(weight: Tensor<4>) -> Tensor<4> {
    let [cout, cin, _, _] = weight.dims();
    weight.permute([0, 2, 1, 3]).reshape([cout, 3 * cin, 1, 3])
}

/// 3×3 conv as a row-wise 1×3 conv: each output row sees the three padded input rows it needs
/// stacked as channels, so burn-flex runs its direct (no-im2col) GEMM path.
fn conv_rows(weight: &Tensor<4>, x: Tensor<4>) -> Tensor<4> {
    let [b, cin, h, w] = x.dims();
    let cout = weight.dims()[0];
    let wp = w + 2;
    let xp = x.pad([(1, 1), (1, 1)], PadMode::Constant(0.0)); // [b, cin, h+2, wp]
    let rows = xp
        .unfold::<5, _>(2, 3, 1) // [b, cin, h, wp, 3]
        .permute([0, 2, 4, 1, 3]) // [b, h, 3, cin, wp]
        .reshape([b * h, 3 * cin, 1, wp]);
    let y = burn::tensor::module::conv2d(
        rows,
        weight.clone(),
        None,
        burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    ); // [b*h, cout, 1, w]
    y.reshape([b, h, cout, w]).permute([0, 2, 1, 3])
}

/// GroupNorm with sums as matrix products and the affine folded into one per-channel scale and
/// shift: `y = x·s + t`, `s = γ·rstd`, `t = β − mean·s`.
fn gn2(x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>, groups: usize, eps: f64) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let n = (c / groups) * h * w;
    let device = x.device();
    let xg = x.reshape([b * groups, 1, n]);
    let ones = Tensor::<3>::ones([1, n, 1], (&device, xg.dtype()));
    let mean = xg.clone().matmul(ones.clone()).div_scalar(n as f64); // [bg, 1, 1]
    let centred = xg - mean.clone();
    let var = centred
        .clone()
        .matmul(centred.clone().swap_dims(1, 2))
        .div_scalar(n as f64); // [bg, 1, 1]
    let rstd = var.add_scalar(eps).sqrt().recip().reshape([b, groups, 1]);
    let s = gamma.reshape([1, groups, c / groups]) * rstd; // [b, g, c/g]
    let s = s.reshape([b, c, 1]);
    let y = centred.reshape([b, c, h * w]) * s + beta.reshape([1, c, 1]);
    y.reshape([b, c, h, w])
}
