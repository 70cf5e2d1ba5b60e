//! From decoded pixels to RGB images and PNG files, written atomically.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

use crate::error::JanusError;

/// One generated image with the codes it was decoded from.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    /// Index of its prompt in the call.
    pub prompt: usize,
    /// The sampled codes, row-major over the code grid.
    pub codes: Vec<i64>,
    /// The decoded picture.
    pub image: RgbImage,
}

impl GeneratedImage {
    /// Writes the picture as a PNG at `path`, atomically (see [`save_png`]).
    ///
    /// # Errors
    ///
    /// [`JanusError::Output`] when the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), JanusError> {
        save_png(&self.image, path)
    }

    /// The picture encoded as PNG bytes, for callers that keep it in memory.
    ///
    /// # Errors
    ///
    /// [`JanusError::Output`] if encoding fails.
    pub fn png_bytes(&self) -> Result<Vec<u8>, JanusError> {
        png_bytes(&self.image)
    }
}

/// Encodes an image as PNG bytes.
///
/// # Errors
///
/// [`JanusError::Output`] if encoding fails.
pub fn png_bytes(image: &RgbImage) -> Result<Vec<u8>, JanusError> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| JanusError::Output {
            path: PathBuf::from("<memory>"),
            source: std::io::Error::other(e),
        })?;
    Ok(out)
}

/// Converts decoded images to RGB: `clip((x + 1) / 2 · 255, 0, 255)` computed in `f32`, then
/// truncated toward zero (not rounded), as the reference stores into a `uint8` array.
///
/// # Shapes
/// - decoded: `[B, 3, H, W]`, roughly in `[-1, 1]`
/// - output: `B` images of `W × H`
pub fn to_rgb_images(decoded: Tensor<4>) -> Vec<RgbImage> {
    let [b, c, h, w] = decoded.dims();
    let data: Vec<f32> = decoded.into_data().iter::<f32>().collect();
    let plane = h * w;
    (0..b)
        .map(|i| {
            let mut raw = Vec::with_capacity(plane * 3);
            for p in 0..plane {
                for ch in 0..3 {
                    // A grayscale decoder (c == 1) would fill all three channels.
                    let x = data[(i * c + ch.min(c - 1)) * plane + p];
                    raw.push(((x + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0) as u8);
                }
            }
            RgbImage::from_raw(w as u32, h as u32, raw).expect("buffer sized to w·h·3")
        })
        .collect()
}

/// Writes one PNG atomically: encoded into a temporary file in the same directory, flushed to
/// disk, then renamed over `path`. On failure nothing is left behind.
///
/// # Errors
///
/// [`JanusError::Output`] when the directory cannot be written or encoding fails.
pub fn save_png(image: &RgbImage, path: impl AsRef<Path>) -> Result<(), JanusError> {
    let path = path.as_ref();
    let tmp = write_temp_png(image, path)?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        JanusError::Output {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes `images` as `dir/{stem}_{i}.png` (the directory is created if needed) and returns
/// the paths.
///
/// Every image is first written to a temporary file; only when all are written are they
/// renamed into place, so a failure leaves no partial file and, short of a failing rename,
/// no partial set.
///
/// # Errors
///
/// [`JanusError::InvalidOption`] for an empty `stem` or one with a path separator,
/// [`JanusError::Output`] when the directory cannot be created or written.
pub fn save_images(
    images: &[RgbImage],
    dir: impl AsRef<Path>,
    stem: &str,
) -> Result<Vec<PathBuf>, JanusError> {
    if stem.is_empty() || stem.contains(['/', '\\']) || stem == "." || stem == ".." {
        return Err(JanusError::InvalidOption(format!(
            "file stem {stem:?} must be a plain, non-empty name"
        )));
    }
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| JanusError::Output {
        path: dir.to_path_buf(),
        source,
    })?;
    let paths: Vec<PathBuf> = (0..images.len())
        .map(|i| dir.join(format!("{stem}_{i}.png")))
        .collect();
    let mut temps = Vec::with_capacity(images.len());
    for (image, path) in images.iter().zip(&paths) {
        match write_temp_png(image, path) {
            Ok(tmp) => temps.push(tmp),
            Err(e) => {
                for tmp in &temps {
                    let _ = std::fs::remove_file(tmp);
                }
                return Err(e);
            }
        }
    }
    for (i, (tmp, path)) in temps.iter().zip(&paths).enumerate() {
        if let Err(source) = std::fs::rename(tmp, path) {
            for tmp in &temps[i..] {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(JanusError::Output {
                path: path.clone(),
                source,
            });
        }
    }
    Ok(paths)
}

/// Encodes `image` into a fresh hidden file next to `path` and syncs it; returns its path.
/// Removes the file again on any failure.
fn write_temp_png(image: &RgbImage, path: &Path) -> Result<PathBuf, JanusError> {
    let output_err = |source| JanusError::Output {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| output_err(std::io::Error::other("not a file path")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Unique per process and call, so concurrent writers never share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.{}-{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(output_err)?;
    let written = (|| -> std::io::Result<()> {
        let mut out = BufWriter::new(file);
        PngEncoder::new(&mut out)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                ExtendedColorType::Rgb8,
            )
            .map_err(std::io::Error::other)?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(source) => {
            let _ = std::fs::remove_file(&tmp);
            Err(output_err(source))
        }
    }
}
