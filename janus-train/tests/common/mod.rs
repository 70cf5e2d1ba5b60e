//! Shared by the parity tests: fixture discovery, golden tensors, error measures (a subset of
//! janus-core's `tests/common`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// Root of the fixtures: `JANUS_FIXTURES`, or the project's `tests/fixtures`.
pub fn fixtures_root() -> PathBuf {
    match std::env::var_os("JANUS_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")),
    }
}

/// Every model directory (one holding `config.json`) under the root. Fails when there is none.
pub fn model_dirs() -> Vec<PathBuf> {
    let root = fixtures_root();
    let mut out = Vec::new();
    walk(&root, &mut |d| {
        if d.join("config.json").is_file() {
            out.push(d.to_path_buf());
        }
    });
    out.sort();
    assert!(
        !out.is_empty(),
        "no model directory (with config.json) under {}",
        root.display()
    );
    out
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    f(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        walk(&d, f);
    }
}

/// One golden tensor on the host: floats as f32, ids and masks widened to i64.
#[derive(Debug, Clone)]
pub struct Golden {
    pub shape: Vec<usize>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
}

/// Reads every tensor of a golden safetensors file.
pub fn read_goldens(path: &Path) -> BTreeMap<String, Golden> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let (floats, ints) = match view.dtype() {
            Dtype::F32 => (
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                vec![],
            ),
            Dtype::I64 => (
                vec![],
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::U8 | Dtype::BOOL => (vec![], data.iter().map(|b| *b as i64).collect()),
            other => panic!("{name}: unexpected golden dtype {other:?}"),
        };
        out.insert(
            name,
            Golden {
                shape: view.shape().to_vec(),
                floats,
                ints,
            },
        );
    }
    out
}

/// ‖out − ref‖ / ‖ref‖.
pub fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    let (mut num, mut den) = (0f64, 0f64);
    for (o, r) in out.iter().zip(reference) {
        num += (*o as f64 - *r as f64).powi(2);
        den += (*r as f64).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}
