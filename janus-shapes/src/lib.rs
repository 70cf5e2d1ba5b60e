//! The shapes demo: a tiny Janus trained from scratch on synthetic data (the model shipped in
//! `models/shapes-janus`), built and scored by the `janus-shapes` binary.
//!
//! The data: small images of one coloured shape on a light background, with captions, written
//! as the JSONL files [`janus_train::data`] reads.
//!
//! Every image shows one shape ([`ShapeKind`]: circle, square, triangle) in one colour
//! ([`Colour`]: red, green, blue, yellow), of random size and position, on a random light-grey
//! background. Everything is a pure function of a seed, so a dataset can be rebuilt exactly.
//!
//! | file | line |
//! |---|---|
//! | `train_und.jsonl` | `{"query": "<image>\nWhat is in the image?", "response": "a red circle.", "images": ["train/00000.png"]}` |
//! | `train_t2i.jsonl` | `{"prompt": "a red circle", "image": "train/00000.png"}` |
//!
//! [`write_dataset`] writes a training split and a held-out split drawn from different seeds.
//! [`judge`] recognises a shape in an image (generated or drawn) from the colour of its
//! non-background pixels and how much of their bounding box they fill, which is how the
//! generation tests score a model.
//!
//! ```
//! use janus_shapes::{ShapeGenerator, judge};
//!
//! let mut shapes = ShapeGenerator::new(32, 7);
//! let sample = shapes.sample();
//! let image = sample.render();
//! assert_eq!(judge(&image).map(|j| j.label()), Some(sample.label()));
//! ```
//!
//! [`card::model_card`] writes the README of a model directory the recipe built.

#![warn(missing_docs)]

pub mod card;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use janus_core::processor::RgbImage;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::Serialize;

/// The question every understanding sample asks.
pub const QUESTION: &str = "What is in the image?";

/// The three shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShapeKind {
    /// A filled disc.
    Circle,
    /// A filled axis-aligned square.
    Square,
    /// A filled isosceles triangle, apex up.
    Triangle,
}

impl ShapeKind {
    /// Every shape.
    pub const ALL: [ShapeKind; 3] = [ShapeKind::Circle, ShapeKind::Square, ShapeKind::Triangle];

    /// The word used in captions.
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
        }
    }

    /// The fraction of its bounding box the ideal shape fills (π/4, 1, 1/2).
    pub fn fill_ratio(self) -> f64 {
        match self {
            ShapeKind::Circle => std::f64::consts::FRAC_PI_4,
            ShapeKind::Square => 1.0,
            ShapeKind::Triangle => 0.5,
        }
    }
}

/// The four colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
}

impl Colour {
    /// Every colour.
    pub const ALL: [Colour; 4] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow];

    /// The word used in captions.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
        }
    }

    /// The RGB value it is drawn with.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Green => [30, 170, 50],
            Colour::Blue => [30, 60, 220],
            Colour::Yellow => [235, 200, 20],
        }
    }

    /// The palette colour nearest to `rgb` (squared RGB distance).
    pub fn nearest(rgb: [f64; 3]) -> Colour {
        let dist = |c: Colour| {
            c.rgb()
                .iter()
                .zip(rgb)
                .map(|(&a, b)| (a as f64 - b).powi(2))
                .sum::<f64>()
        };
        Colour::ALL
            .into_iter()
            .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
            .expect("non-empty palette")
    }
}

/// What a caption names: a colour and a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// The shape's colour.
    pub colour: Colour,
    /// The shape.
    pub shape: ShapeKind,
}

impl Label {
    /// All 12 combinations, colour-major.
    pub fn all() -> Vec<Label> {
        Colour::ALL
            .into_iter()
            .flat_map(|colour| {
                ShapeKind::ALL
                    .into_iter()
                    .map(move |shape| Label { colour, shape })
            })
            .collect()
    }

    /// The text-to-image prompt, e.g. `a red circle`.
    pub fn caption(self) -> String {
        format!("a {} {}", self.colour.name(), self.shape.name())
    }

    /// The understanding answer, e.g. `a red circle.`.
    pub fn answer(self) -> String {
        format!("{}.", self.caption())
    }

    /// Reads a caption or an answer back (`a red circle`, `A red circle.`); `None` if it names
    /// no known colour and shape in that form.
    pub fn parse(text: &str) -> Option<Label> {
        let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut words = text.split_whitespace();
        if words.next()? != "a" {
            return None;
        }
        let colour = words.next()?;
        let shape = words.next()?;
        if words.next().is_some() {
            return None;
        }
        Some(Label {
            colour: Colour::ALL.into_iter().find(|c| c.name() == colour)?,
            shape: ShapeKind::ALL.into_iter().find(|s| s.name() == shape)?,
        })
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.caption())
    }
}

/// One drawn shape: what it is, where, and on what background.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeSample {
    /// The shape.
    pub shape: ShapeKind,
    /// Its colour.
    pub colour: Colour,
    /// Side of its bounding box in pixels.
    pub size: usize,
    /// Left column of the bounding box.
    pub x: usize,
    /// Top row of the bounding box.
    pub y: usize,
    /// Grey level of the background.
    pub background: u8,
    /// Image side in pixels.
    pub image_size: usize,
}

impl ShapeSample {
    /// Its label.
    pub fn label(&self) -> Label {
        Label {
            colour: self.colour,
            shape: self.shape,
        }
    }

    /// Whether the pixel whose centre is at `(px, py)` (in pixels) lies inside the shape.
    fn covers(&self, px: f64, py: f64) -> bool {
        let s = self.size as f64;
        let (u, v) = (px - self.x as f64, py - self.y as f64);
        if u < 0.0 || v < 0.0 || u >= s || v >= s {
            return false;
        }
        match self.shape {
            ShapeKind::Square => true,
            ShapeKind::Circle => {
                let r = s / 2.0;
                (u - r).powi(2) + (v - r).powi(2) <= r * r
            }
            // Apex at the top centre, base along the bottom edge: at depth v the width is v.
            ShapeKind::Triangle => (u - s / 2.0).abs() <= v / 2.0,
        }
    }

    /// Draws it (pixel centres inside the shape take its colour; no antialiasing).
    pub fn render(&self) -> RgbImage {
        let n = self.image_size;
        let bg = [self.background; 3];
        let fg = self.colour.rgb();
        let mut raw = Vec::with_capacity(n * n * 3);
        for y in 0..n {
            for x in 0..n {
                let inside = self.covers(x as f64 + 0.5, y as f64 + 0.5);
                raw.extend_from_slice(if inside { &fg } else { &bg });
            }
        }
        RgbImage::from_raw(n as u32, n as u32, raw).expect("n·n·3 bytes")
    }
}

/// A seeded, endless stream of [`ShapeSample`]s.
#[derive(Debug, Clone)]
pub struct ShapeGenerator {
    rng: ChaCha8Rng,
    image_size: usize,
}

impl ShapeGenerator {
    /// A stream of `image_size`² images (at least 16 pixels) from `seed`.
    pub fn new(image_size: usize, seed: u64) -> Self {
        assert!(image_size >= 16, "images must be at least 16 pixels wide");
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            image_size,
        }
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + ((u128::from(self.rng.next_u64()) * (hi - lo + 1) as u128) >> 64) as usize
    }

    /// The smallest and largest shape side: 3/8 and 3/4 of the image.
    pub fn size_range(&self) -> (usize, usize) {
        (self.image_size * 3 / 8, self.image_size * 3 / 4)
    }

    /// The next random shape (uniform shape, colour, size, position and background).
    pub fn sample(&mut self) -> ShapeSample {
        let label = Label::all()[self.range(0, 11)];
        self.sample_of(label)
    }

    /// A random shape with a given label.
    pub fn sample_of(&mut self, label: Label) -> ShapeSample {
        let n = self.image_size;
        let margin = 2;
        let (lo, hi) = self.size_range();
        let size = self.range(lo, hi);
        let x = self.range(margin, n - margin - size);
        let y = self.range(margin, n - margin - size);
        let background = self.range(225, 250) as u8;
        ShapeSample {
            shape: label.shape,
            colour: label.colour,
            size,
            x,
            y,
            background,
            image_size: n,
        }
    }
}

/// What [`judge`] saw in an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// Majority colour of the shape's pixels.
    pub colour: Colour,
    /// The shape its fill ratio indicates.
    pub shape: ShapeKind,
    /// Shape pixels / bounding-box area.
    pub fill: f64,
    /// Shape pixels.
    pub pixels: usize,
}

impl Judgement {
    /// The label it reads as.
    pub fn label(&self) -> Label {
        Label {
            colour: self.colour,
            shape: self.shape,
        }
    }
}

/// Recognises the shape in an image: the background is the median colour of the one-pixel
/// frame; a pixel belongs to the shape when its L1 distance to the background exceeds 120;
/// the largest 4-connected group of such pixels is the shape. Its colour is the majority of
/// its pixels' nearest palette colours; its fill ratio (pixels / bounding-box area) picks the
/// shape: below 0.64 a triangle, below 0.89 a circle, else a square.
///
/// `None` when no group of at least 9 pixels stands out from the background.
pub fn judge(image: &RgbImage) -> Option<Judgement> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w < 3 || h < 3 {
        return None;
    }
    let px = |x: usize, y: usize| image.get_pixel(x as u32, y as u32).0;
    let mut frame: Vec<[u8; 3]> = Vec::new();
    for x in 0..w {
        frame.push(px(x, 0));
        frame.push(px(x, h - 1));
    }
    for y in 1..h - 1 {
        frame.push(px(0, y));
        frame.push(px(w - 1, y));
    }
    let mut bg = [0u8; 3];
    for (c, b) in bg.iter_mut().enumerate() {
        let mut v: Vec<u8> = frame.iter().map(|p| p[c]).collect();
        v.sort_unstable();
        *b = v[v.len() / 2];
    }
    let fg: Vec<bool> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            let p = px(x, y);
            let d: i32 = (0..3).map(|c| (p[c] as i32 - bg[c] as i32).abs()).sum();
            d > 120
        })
        .collect();

    // Largest 4-connected component.
    let mut seen = vec![false; w * h];
    let mut best: Vec<usize> = Vec::new();
    for start in 0..w * h {
        if !fg[start] || seen[start] {
            continue;
        }
        let mut component = vec![start];
        seen[start] = true;
        let mut i = 0;
        while i < component.len() {
            let p = component[i];
            i += 1;
            let (x, y) = (p % w, p / w);
            let mut visit = |q: usize| {
                if fg[q] && !seen[q] {
                    seen[q] = true;
                    component.push(q);
                }
            };
            if x > 0 {
                visit(p - 1);
            }
            if x + 1 < w {
                visit(p + 1);
            }
            if y > 0 {
                visit(p - w);
            }
            if y + 1 < h {
                visit(p + w);
            }
        }
        if component.len() > best.len() {
            best = component;
        }
    }
    if best.len() < 9 {
        return None;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (w, 0, h, 0);
    let mut votes = [0usize; 4];
    for &p in &best {
        let (x, y) = (p % w, p / w);
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
        let rgb = px(x, y).map(f64::from);
        let c = Colour::nearest(rgb);
        votes[Colour::ALL
            .iter()
            .position(|&k| k == c)
            .expect("palette colour")] += 1;
    }
    let colour = Colour::ALL[(0..4)
        .max_by_key(|&i| (votes[i], 4 - i))
        .expect("4 colours")];
    let area = (x1 - x0 + 1) * (y1 - y0 + 1);
    let fill = best.len() as f64 / area as f64;
    let shape = if fill < 0.64 {
        ShapeKind::Triangle
    } else if fill < 0.89 {
        ShapeKind::Circle
    } else {
        ShapeKind::Square
    };
    Some(Judgement {
        colour,
        shape,
        fill,
        pixels: best.len(),
    })
}

/// Files written by [`write_dataset`].
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetFiles {
    /// Training understanding JSONL.
    pub und: PathBuf,
    /// Training text-to-image JSONL.
    pub t2i: PathBuf,
    /// Held-out understanding JSONL.
    pub val_und: PathBuf,
    /// Held-out text-to-image JSONL.
    pub val_t2i: PathBuf,
    /// Training images.
    pub train_images: usize,
    /// Held-out images.
    pub val_images: usize,
}

#[derive(Serialize)]
struct UndLine<'a> {
    query: String,
    response: String,
    images: [&'a str; 1],
}

#[derive(Serialize)]
struct T2iLine<'a> {
    prompt: String,
    image: &'a str,
}

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes one split: `n` images under `dir/<split>/` and its two JSONL files in `dir`.
fn write_split(
    dir: &Path,
    split: &str,
    n: usize,
    image_size: usize,
    seed: u64,
) -> std::io::Result<(PathBuf, PathBuf)> {
    let img_dir = dir.join(split);
    std::fs::create_dir_all(&img_dir).map_err(|e| io_err(&img_dir, e))?;
    let und_path = dir.join(format!("{split}_und.jsonl"));
    let t2i_path = dir.join(format!("{split}_t2i.jsonl"));
    let mut und = std::io::BufWriter::new(
        std::fs::File::create(&und_path).map_err(|e| io_err(&und_path, e))?,
    );
    let mut t2i = std::io::BufWriter::new(
        std::fs::File::create(&t2i_path).map_err(|e| io_err(&t2i_path, e))?,
    );
    let mut shapes = ShapeGenerator::new(image_size, seed);
    let labels = Label::all();
    for i in 0..n {
        // Balanced labels (cycling), random everything else.
        let sample = shapes.sample_of(labels[i % labels.len()]);
        let rel = format!("{split}/{i:05}.png");
        let path = dir.join(&rel);
        sample
            .render()
            .save(&path)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
        let label = sample.label();
        let line = serde_json::to_string(&UndLine {
            query: format!("<image>\n{QUESTION}"),
            response: label.answer(),
            images: [&rel],
        })
        .expect("serialisable");
        writeln!(und, "{line}").map_err(|e| io_err(&und_path, e))?;
        let line = serde_json::to_string(&T2iLine {
            prompt: label.caption(),
            image: &rel,
        })
        .expect("serialisable");
        writeln!(t2i, "{line}").map_err(|e| io_err(&t2i_path, e))?;
    }
    und.flush().map_err(|e| io_err(&und_path, e))?;
    t2i.flush().map_err(|e| io_err(&t2i_path, e))?;
    Ok((und_path, t2i_path))
}

/// Writes a training split of `train` images (seed `seed`) and a held-out split of `val`
/// images (seed `seed + 1`) under `dir`: PNGs in `dir/train/` and `dir/val/`, and
/// `train_und.jsonl`, `train_t2i.jsonl`, `val_und.jsonl`, `val_t2i.jsonl` in `dir`. Labels
/// cycle through all 12 combinations, so each split is balanced.
pub fn write_dataset(
    dir: &Path,
    train: usize,
    val: usize,
    image_size: usize,
    seed: u64,
) -> std::io::Result<DatasetFiles> {
    let (und, t2i) = write_split(dir, "train", train, image_size, seed)?;
    let (val_und, val_t2i) = write_split(dir, "val", val, image_size, seed.wrapping_add(1))?;
    Ok(DatasetFiles {
        und,
        t2i,
        val_und,
        val_t2i,
        train_images: train,
        val_images: val,
    })
}

/// How a model did on [`score_understanding`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnderstandingScore {
    /// Answers exactly equal to the expected `a <colour> <shape>.`.
    pub correct: usize,
    /// Questions asked.
    pub total: usize,
    /// `(expected, answered)` for the wrong ones.
    pub wrong: Vec<(String, String)>,
}

/// Asks [`QUESTION`] about `n` fresh images (from `seed`) and counts exactly right answers
/// (greedy decoding, at most 16 new tokens).
pub fn score_understanding(
    janus: &janus_core::Janus,
    n: usize,
    seed: u64,
) -> Result<UnderstandingScore, janus_core::JanusError> {
    use janus_core::{AnswerOptions, SamplingOptions};
    let size = janus.config.vision.image_size;
    let mut shapes = ShapeGenerator::new(size, seed);
    let options = AnswerOptions {
        max_new_tokens: 16,
        sampling: SamplingOptions::greedy(),
        stop_strings: Vec::new(),
    };
    let mut score = UnderstandingScore {
        correct: 0,
        total: 0,
        wrong: Vec::new(),
    };
    let samples: Vec<ShapeSample> = (0..n).map(|_| shapes.sample()).collect();
    for chunk in samples.chunks(16) {
        let conversations: Vec<_> = chunk
            .iter()
            .map(|s| (janus.processor.question(QUESTION, 1), vec![s.render()]))
            .collect();
        let answers = janus.answer_batch(&conversations, &options, |_, _| {
            std::ops::ControlFlow::Continue(())
        })?;
        for (s, a) in chunk.iter().zip(answers) {
            score.total += 1;
            let expected = s.label().answer();
            if a.text.trim() == expected {
                score.correct += 1;
            } else {
                score.wrong.push((expected, a.text));
            }
        }
    }
    Ok(score)
}

/// How a model did on [`score_generation`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationScore {
    /// Images [`judge`]d to show what their caption asks for.
    pub correct: usize,
    /// Images drawn.
    pub total: usize,
    /// `(caption, judged as)` for the wrong ones (`none` when no shape was found).
    pub wrong: Vec<(String, String)>,
    /// The judgement of every image, in order.
    pub judgements: Vec<Option<Judgement>>,
}

/// Draws `parallel` images for each of the 12 captions and [`judge`]s them.
pub fn score_generation(
    janus: &janus_core::Janus,
    parallel: usize,
    options: &janus_core::GenerationOptions,
) -> Result<(GenerationScore, Vec<janus_core::GeneratedImage>), janus_core::JanusError> {
    let labels = Label::all();
    let captions: Vec<String> = labels.iter().map(|l| l.caption()).collect();
    let options = janus_core::GenerationOptions {
        parallel_size: parallel,
        ..options.clone()
    };
    let images =
        janus.generate_images(&captions, &options, |_| std::ops::ControlFlow::Continue(()))?;
    let mut score = GenerationScore {
        correct: 0,
        total: 0,
        wrong: Vec::new(),
        judgements: Vec::new(),
    };
    for image in &images {
        let want = labels[image.prompt];
        score.total += 1;
        let judgement = judge(&image.image);
        score.judgements.push(judgement);
        match judgement {
            Some(j) if j.label() == want => score.correct += 1,
            Some(j) => score.wrong.push((want.caption(), j.label().caption())),
            None => score.wrong.push((want.caption(), "none".into())),
        }
    }
    Ok((score, images))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_round_trip() {
        for label in Label::all() {
            assert_eq!(Label::parse(&label.caption()), Some(label));
            assert_eq!(Label::parse(&label.answer()), Some(label));
        }
        assert_eq!(Label::parse("a red"), None);
        assert_eq!(Label::parse("a red circle and more"), None);
    }

    #[test]
    fn seeded() {
        let a: Vec<_> = (0..5)
            .map({
                let mut g = ShapeGenerator::new(32, 3);
                move |_| g.sample()
            })
            .collect();
        let b: Vec<_> = (0..5)
            .map({
                let mut g = ShapeGenerator::new(32, 3);
                move |_| g.sample()
            })
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn shapes_stay_inside_with_a_background_frame() {
        let mut g = ShapeGenerator::new(32, 11);
        for _ in 0..500 {
            let s = g.sample();
            assert!(s.x >= 2 && s.y >= 2 && s.x + s.size <= 30 && s.y + s.size <= 30);
        }
    }

    #[test]
    fn judge_reads_drawn_shapes() {
        let mut g = ShapeGenerator::new(32, 5);
        for _ in 0..600 {
            let s = g.sample();
            let j = judge(&s.render()).expect("a shape");
            assert_eq!(j.label(), s.label(), "{s:?} judged {j:?}");
        }
    }
}
