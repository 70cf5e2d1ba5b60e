//! Image loading and `VLMImageProcessor` preprocessing: resize (Pillow bicubic), pad to square,
//! rescale, normalise.

use std::path::Path;

use image::RgbImage;

use super::config::ImageProcessorConfig;
use super::error::ProcessorError;
use super::resize::resize_bicubic;

/// Decodes an image file into 8-bit RGB, like `PIL.Image.open(path).convert("RGB")`.
///
/// The format is sniffed from the content, not the extension. Alpha is dropped (not
/// composited), grey is replicated, palettes are expanded — what PIL's `convert("RGB")` does.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage, ProcessorError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| ProcessorError::io(path, e))?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes encoded image bytes (PNG, JPEG) into 8-bit RGB; `name` is used in error messages.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<RgbImage, ProcessorError> {
    let decode_err = |e: image::ImageError| ProcessorError::ImageDecode {
        source_name: name.to_owned(),
        message: e.to_string(),
    };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ProcessorError::ImageDecode {
            source_name: name.to_owned(),
            message: e.to_string(),
        })?;
    let image = reader.decode().map_err(decode_err)?;
    if image.width() == 0 || image.height() == 0 {
        return Err(ProcessorError::InvalidImageSize {
            width: image.width(),
            height: image.height(),
        });
    }
    Ok(image.to_rgb8())
}

/// `VLMImageProcessor`: turns RGB images into normalised `[3, S, S]` f32 arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    config: ImageProcessorConfig,
}

impl ImageProcessor {
    /// Creates a processor from resolved settings.
    pub fn new(config: ImageProcessorConfig) -> Self {
        Self { config }
    }

    /// The settings.
    pub fn config(&self) -> &ImageProcessorConfig {
        &self.config
    }

    /// Side `S` of the square output.
    pub fn image_size(&self) -> usize {
        self.config.image_size
    }

    /// Number of f32 values one processed image takes (`3·S·S`).
    pub fn image_numel(&self) -> usize {
        3 * self.config.image_size * self.config.image_size
    }

    /// `(width, height)` after the aspect-preserving resize: the long side becomes `image_size`,
    /// each side is `max(int(side / long · image_size), min_size)`.
    pub fn target_size(&self, width: u32, height: u32) -> Result<(usize, usize), ProcessorError> {
        if width == 0 || height == 0 {
            return Err(ProcessorError::InvalidImageSize { width, height });
        }
        let long = f64::from(width.max(height));
        let size = self.config.image_size as f64;
        // Python: int(h / m * size); the quotient is taken first, as f64, then truncated.
        let side = |v: u32| ((f64::from(v) / long * size) as usize).max(self.config.min_size);
        Ok((side(width), side(height)))
    }

    /// Resizes with Pillow's bicubic filter and pads to a square of `background_color`,
    /// returning the `S×S` RGB canvas (the step before rescaling).
    pub fn resize_and_pad(&self, image: &RgbImage) -> Result<RgbImage, ProcessorError> {
        let (w, h) = (image.width(), image.height());
        let (tw, th) = self.target_size(w, h)?;
        let resized = resize_bicubic(image.as_raw(), w as usize, h as usize, 3, tw, th);

        // expand2square: paste the resized image centred (floor offset) on the long axis.
        let side = tw.max(th);
        let (ox, oy) = if tw >= th {
            (0, (tw - th) / 2)
        } else {
            ((th - tw) / 2, 0)
        };
        let mut canvas = vec![0u8; side * side * 3];
        for px in canvas.chunks_exact_mut(3) {
            px.copy_from_slice(&self.config.background_color);
        }
        for y in 0..th {
            let src = &resized[y * tw * 3..(y + 1) * tw * 3];
            let start = ((y + oy) * side + ox) * 3;
            canvas[start..start + tw * 3].copy_from_slice(src);
        }
        let side = side as u32;
        RgbImage::from_raw(side, side, canvas)
            .ok_or_else(|| ProcessorError::InvalidInput("canvas size".into()))
    }

    /// Full preprocessing of one image into CHW f32 values (`3·S·S` of them).
    ///
    /// Rescaling is done in f64 and cast to f32, normalisation in f32, as HF's `rescale` and
    /// `normalize` do on numpy arrays.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Vec<f32>, ProcessorError> {
        let canvas = self.resize_and_pad(image)?;
        let side = canvas.width() as usize;
        let plane = side * side;
        let c = &self.config;
        let mean = c.image_mean.map(|m| m as f32);
        let std = c.image_std.map(|s| s as f32);
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in canvas.as_raw().chunks_exact(3).enumerate() {
            for ch in 0..3 {
                let mut x = (f64::from(px[ch]) * c.rescale_factor) as f32;
                if c.do_normalize {
                    x = (x - mean[ch]) / std[ch];
                }
                out[ch * plane + i] = x;
            }
        }
        Ok(out)
    }
}
