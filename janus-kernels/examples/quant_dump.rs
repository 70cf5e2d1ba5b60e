//! Writes fixed test rows and their Q8_0 / Q4_K bytes and dequantisations, for
//! `tests/gguf_check.py` to compare with the `gguf` Python package (and with GGML's C).
//!
//! ```text
//! cargo build --workspace --release --all-targets
//! target/release/examples/quant_dump /tmp/quant-check
//! python3 janus-kernels/tests/gguf_check.py /tmp/quant-check
//! ```

use janus_kernels::quant::{QuantKind, QuantMatrix};
use std::path::PathBuf;

const ROWS: usize = 48;
const COLS: usize = 512;

/// Deterministic uniform values in [-0.5, 0.5).
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Row `r` of the test matrix: Gaussian-like rows at several scales, outliers, one-signed,
/// constant, zero, sparse, heavy-tailed and tiny rows.
fn row(r: usize) -> Vec<f32> {
    let u: Vec<f32> = uniform(4 * COLS, r as u64 + 1);
    let g: Vec<f32> = (0..COLS)
        .map(|i| (u[4 * i] + u[4 * i + 1] + u[4 * i + 2] + u[4 * i + 3]) * 1.7)
        .collect();
    let scale = [1e-3f32, 0.02, 0.1, 1.0, 30.0, 1000.0][r % 6];
    match r / 6 {
        0 => g.iter().map(|v| v * scale).collect(),
        1 => {
            let mut x: Vec<f32> = g.iter().map(|v| v * scale).collect();
            x[(r * 37) % COLS] = 25.0 * scale;
            x[(r * 91 + 5) % COLS] = -40.0 * scale;
            x
        }
        2 => g.iter().map(|v| v.abs() * scale).collect(),
        3 => g.iter().map(|v| -v.abs() * scale - 0.5 * scale).collect(),
        4 => match r % 6 {
            0 => vec![0.0; COLS],
            1 => vec![0.375; COLS],
            2 => vec![-2.0; COLS],
            3 => (0..COLS)
                .map(|i| if i % 17 == 0 { g[i] } else { 0.0 })
                .collect(),
            4 => vec![1e-9; COLS],
            _ => g.iter().map(|v| v * 1e-6).collect(),
        },
        5 => g.iter().map(|v| v * v * v * scale).collect(),
        6 => u[..COLS].iter().map(|v| v * scale).collect(),
        _ => g.iter().map(|v| (v * 3.0).round() * scale).collect(),
    }
}

fn write_f32(path: PathBuf, x: &[f32]) -> std::io::Result<()> {
    std::fs::write(
        path,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: quant_dump DIR")?);
    std::fs::create_dir_all(&dir)?;
    let x: Vec<f32> = (0..ROWS).flat_map(row).collect();
    write_f32(dir.join("input.f32"), &x)?;
    std::fs::write(dir.join("shape.txt"), format!("{ROWS} {COLS}\n"))?;
    for kind in [QuantKind::Q8_0, QuantKind::Q4K] {
        let w = QuantMatrix::quantize(kind, &x, ROWS, COLS)?;
        std::fs::write(
            dir.join(format!("ours.{}", kind.name().to_lowercase())),
            w.bytes(),
        )?;
        write_f32(
            dir.join(format!("ours.{}.deq", kind.name().to_lowercase())),
            &w.dequantize_rows(0..ROWS)?,
        )?;
    }
    println!("wrote {ROWS}x{COLS} rows to {}", dir.display());
    Ok(())
}
