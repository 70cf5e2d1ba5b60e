//! The training data pipeline on the tiny fixture: JSONL formats, malformed lines, labels
//! against the training golden, length limits, text-to-image crops and the code cache, prompt
//! dropout, mixing and resumption.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use janus_core::burn::tensor::Device;
use janus_core::processor::{ChatRoles, Message, RgbImage, load_image};
use janus_core::{Janus, LoadOptions};
use janus_testutil::{Dtype, read_goldens};
use janus_train::data::{
    CodeCache, CodeEncoder, ConversationRecord, DataConfig, DataError, DataState, JsonlDataset,
    JsonlReader, Kind, KindScheduler, LabelTurns, MixRatio, MixedLoader, OnError, Overlong,
    SampleOutcome, T2iRecord, VqCodeEncoder, build_understanding, center_crop,
    generation_prompt_ids, label_prompt, prompt_dropout, to_unit_range, unconditional_ids,
};
use janus_train::{IGNORE_INDEX, MixedBatch};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-janus");
const TAG: &str = "<image_placeholder>";

fn tiny() -> Janus {
    Janus::load(TINY, &LoadOptions::default(), &Device::flex()).expect("tiny fixture loads")
}

fn goldens() -> PathBuf {
    Path::new(TINY).join("goldens")
}

/// A temp dir holding copies of the fixture PNGs (`scene.png`, `banner.png`) and `img/`.
fn dataset_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    for name in ["scene.png", "banner.png"] {
        std::fs::copy(goldens().join(name), dir.path().join("img").join(name)).unwrap();
    }
    dir
}

fn write_jsonl(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn read_all<R: janus_train::data::Record>(path: &Path, on_error: OnError) -> Vec<R> {
    JsonlReader::<R>::open(path, TAG, on_error)
        .unwrap()
        .map(|r| r.unwrap().record)
        .collect()
}

fn cases() -> serde_json::Value {
    let text = std::fs::read_to_string(goldens().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Integer tensors of `train.safetensors`, flattened.
fn train_golden() -> BTreeMap<String, Vec<i64>> {
    read_goldens(&goldens().join("train.safetensors"))
        .into_iter()
        .filter(|(_, g)| g.dtype == Dtype::I64)
        .map(|(name, g)| (name, g.ints))
        .collect()
}

/// The VQ encoder of the tiny model, counting how many images it encodes.
struct Counting {
    inner: VqCodeEncoder,
    encoded: Arc<AtomicUsize>,
}

impl CodeEncoder for Counting {
    fn identity(&self) -> &str {
        self.inner.identity()
    }
    fn image_size(&self) -> usize {
        self.inner.image_size()
    }
    fn codes_per_image(&self) -> usize {
        self.inner.codes_per_image()
    }
    fn encode(&self, pixels: &[f32], count: usize) -> Result<Vec<Vec<i64>>, DataError> {
        self.encoded.fetch_add(count, Ordering::SeqCst);
        self.inner.encode(pixels, count)
    }
}

fn counting(janus: &Janus) -> (Box<dyn CodeEncoder>, Arc<AtomicUsize>) {
    let encoded = Arc::new(AtomicUsize::new(0));
    let encoder = Counting {
        inner: VqCodeEncoder::from_janus(janus).unwrap(),
        encoded: encoded.clone(),
    };
    (Box::new(encoder), encoded)
}

fn roles(janus: &Janus) -> ChatRoles {
    janus.roles()
}

// ---------------------------------------------------------------------------------------------
// Formats

#[test]
fn swift_format_parses_with_history_and_images() {
    let dir = dataset_dir();
    let path = write_jsonl(
        dir.path(),
        "und.jsonl",
        &[
            r#"{"query": "<image>Compare with <image>.", "response": "Both are images.", "images": ["img/scene.png", "img/banner.png"], "history": [["Hi", "Hello!"]]}"#.into(),
            // No tag: the image goes in front of the first user message, as ms-swift does.
            r#"{"query": "What is it?", "response": "A scene.", "images": "img/scene.png", "history": null}"#.into(),
            "".into(),
            r#"{"query": "Say hi", "response": "hi", "system": "Be brief."}"#.into(),
        ],
    );
    let records: Vec<ConversationRecord> = read_all(&path, OnError::Fail);
    assert_eq!(records.len(), 3, "the blank line is ignored");

    let r = &records[0];
    assert_eq!(r.turns.len(), 2);
    assert_eq!(r.turns[0].user, "Hi");
    assert_eq!(r.turns[0].assistant, "Hello!");
    assert_eq!(r.turns[1].user, format!("{TAG}Compare with {TAG}."));
    assert_eq!(r.turns[1].assistant, "Both are images.");
    assert_eq!(
        r.images,
        vec![
            dir.path().join("img/scene.png"),
            dir.path().join("img/banner.png")
        ],
        "image paths are relative to the JSONL file's directory"
    );
    assert_eq!(r.system, None);

    assert_eq!(records[1].turns[0].user, format!("{TAG}\nWhat is it?"));
    assert_eq!(records[1].images.len(), 1);

    assert_eq!(records[2].system.as_deref(), Some("Be brief."));
    assert!(
        records[2].images.is_empty(),
        "text-only records have no images"
    );
}

#[test]
fn messages_format_parses() {
    let dir = dataset_dir();
    let path = write_jsonl(
        dir.path(),
        "msgs.jsonl",
        &[
            r#"{"messages": [{"role": "system", "content": "Sys."}, {"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": "A scene."}, {"role": "user", "content": "More?"}, {"role": "assistant", "content": "No."}], "images": ["img/scene.png"]}"#.into(),
            r#"{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}"#.into(),
        ],
    );
    let records: Vec<ConversationRecord> = read_all(&path, OnError::Fail);
    assert_eq!(records.len(), 2);
    let r = &records[0];
    assert_eq!(r.system.as_deref(), Some("Sys."));
    assert_eq!(r.turns.len(), 2);
    assert_eq!(r.turns[0].user, format!("{TAG}Describe."));
    assert_eq!(r.turns[1].assistant, "No.");
    assert_eq!(r.images, vec![dir.path().join("img/scene.png")]);
    assert_eq!(records[1].turns[0].user, "2+2?");
    assert!(records[1].images.is_empty());
}

#[test]
fn t2i_format_parses() {
    let dir = dataset_dir();
    let path = write_jsonl(
        dir.path(),
        "t2i.jsonl",
        &[r#"{"prompt": "a wide banner", "image": "img/banner.png"}"#.into()],
    );
    let records: Vec<T2iRecord> = read_all(&path, OnError::Fail);
    assert_eq!(
        records,
        vec![T2iRecord {
            prompt: "a wide banner".into(),
            image: dir.path().join("img/banner.png"),
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed lines

fn malformed_file(dir: &Path) -> PathBuf {
    write_jsonl(
        dir,
        "bad.jsonl",
        &[
            r#"{"query": "ok", "response": "fine"}"#.into(), // 1
            "this is not json".into(),                       // 2
            r#"{"query": "no response"}"#.into(),            // 3
            r#"{"query": 7, "response": "x"}"#.into(),       // 4
            r#"{"query": "<image>", "response": "x", "images": ["img/nope.png"]}"#.into(), // 5
            r#"{"messages": [{"role": "assistant", "content": "first"}]}"#.into(), // 6
            r#"{"query": "<image><image>", "response": "x", "images": ["img/scene.png"]}"#.into(), // 7
            r#"{"query": "again", "response": "fine"}"#.into(), // 8
        ],
    )
}

#[test]
fn malformed_lines_are_skipped_and_counted_with_file_and_line() {
    let dir = dataset_dir();
    let path = malformed_file(dir.path());
    let mut reader = JsonlReader::<ConversationRecord>::open(&path, TAG, OnError::Skip).unwrap();
    let good: Vec<_> = reader.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(
        good.iter().map(|l| l.loc.line).collect::<Vec<_>>(),
        vec![1, 8]
    );
    assert_eq!(reader.skipped(), 6);
    let lines: Vec<usize> = reader
        .skipped_errors()
        .iter()
        .map(|e| e.loc().unwrap().line)
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
    for e in reader.skipped_errors() {
        let text = e.to_string();
        let prefix = format!("{}:{}: ", path.display(), e.loc().unwrap().line);
        assert!(text.starts_with(&prefix), "{text:?} starts with {prefix:?}");
    }
    let messages: Vec<String> = reader
        .skipped_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(messages[0].contains("not valid JSON"), "{}", messages[0]);
    assert!(
        messages[1].contains("missing field `response`"),
        "{}",
        messages[1]
    );
    assert!(
        messages[2].contains("`query` must be a string"),
        "{}",
        messages[2]
    );
    assert!(
        messages[4].contains("roles must alternate"),
        "{}",
        messages[4]
    );
    assert!(
        messages[5].contains("2 image tag(s) but 1 image(s)"),
        "{}",
        messages[5]
    );

    // The dataset index counts the same lines and keeps only the good ones.
    let dataset = JsonlDataset::<ConversationRecord>::open(&[path], TAG, OnError::Skip).unwrap();
    assert_eq!((dataset.len(), dataset.skipped()), (2, 6));
}

#[test]
fn malformed_line_is_fatal_when_asked() {
    let dir = dataset_dir();
    let path = malformed_file(dir.path());
    let items: Vec<_> = JsonlReader::<ConversationRecord>::open(&path, TAG, OnError::Fail)
        .unwrap()
        .collect();
    assert_eq!(
        items.len(),
        2,
        "one good line, then the error, then nothing"
    );
    assert!(items[0].is_ok());
    match &items[1] {
        Err(DataError::Malformed { loc, .. }) => {
            assert_eq!((loc.path.as_path(), loc.line), (path.as_path(), 2));
        }
        other => panic!("expected a malformed-line error, got {other:?}"),
    }
    let err = JsonlDataset::<ConversationRecord>::open(&[path], TAG, OnError::Fail).unwrap_err();
    assert_eq!(err.loc().unwrap().line, 2);

    // Through the loader too.
    let dir2 = dataset_dir();
    let janus = tiny();
    let config = DataConfig {
        understanding: vec![malformed_file(dir2.path())],
        ratio: MixRatio::new(1, 0, 0),
        on_error: OnError::Fail,
        ..DataConfig::default()
    };
    let err = MixedLoader::new(config, janus.processor.clone(), roles(&janus), None).unwrap_err();
    assert!(matches!(err, DataError::Malformed { .. }), "{err}");
}

#[test]
fn missing_image_is_reported_with_its_path() {
    let dir = dataset_dir();
    let path = write_jsonl(
        dir.path(),
        "t2i.jsonl",
        &[r#"{"prompt": "gone", "image": "img/missing.png"}"#.into()],
    );
    let err = JsonlReader::<T2iRecord>::open(&path, TAG, OnError::Fail)
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    match &err {
        DataError::MissingImage { loc, image } => {
            assert_eq!(loc.line, 1);
            assert_eq!(image, &dir.path().join("img/missing.png"));
        }
        other => panic!("expected MissingImage, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("img/missing.png") && text.contains("t2i.jsonl:1"),
        "{text}"
    );
}

#[test]
fn undecodable_image_is_a_sample_error_skipped_or_fatal() {
    let dir = dataset_dir();
    std::fs::write(dir.path().join("img/broken.png"), b"not a png").unwrap();
    let path = write_jsonl(
        dir.path(),
        "und.jsonl",
        &[
            r#"{"query": "<image>What?", "response": "Broken.", "images": ["img/broken.png"]}"#
                .into(),
            r#"{"query": "<image>What?", "response": "A scene.", "images": ["img/scene.png"]}"#
                .into(),
        ],
    );
    let janus = tiny();
    let config = DataConfig {
        understanding: vec![path],
        ratio: MixRatio::new(1, 0, 0),
        batch_size: 2,
        shuffle: false,
        ..DataConfig::default()
    };
    let mut loader =
        MixedLoader::new(config.clone(), janus.processor.clone(), roles(&janus), None).unwrap();
    let batch = loader.next_batch().unwrap();
    assert_eq!(batch.understanding.unwrap().inputs.batch_size, 2);
    // Unshuffled: broken (skipped), good, then the next epoch: broken (skipped), good.
    assert_eq!(
        loader.stats().skipped_samples,
        2,
        "skipped each time it is drawn"
    );
    assert!(loader.stats().errors[0].contains("und.jsonl:1"));

    let mut strict = MixedLoader::new(
        DataConfig {
            on_error: OnError::Fail,
            ..config
        },
        janus.processor.clone(),
        roles(&janus),
        None,
    )
    .unwrap();
    match strict.next_batch().unwrap_err() {
        DataError::Sample { loc, .. } => assert_eq!(loc.line, 1),
        other => panic!("expected a sample error, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Labels

/// The training golden's conversation as a JSONL line in the `messages` form.
fn golden_line(dir: &Path) -> String {
    let conversation = &cases()["train"]["conversation"];
    let user = conversation[0]["content"].as_str().unwrap();
    let answer = conversation[1]["content"].as_str().unwrap();
    let image = conversation[0]["images"][0].as_str().unwrap();
    std::fs::copy(goldens().join(image), dir.join(image)).unwrap();
    serde_json::json!({
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ],
        "images": [image],
    })
    .to_string()
}

#[test]
fn labels_reproduce_the_training_golden() {
    let dir = dataset_dir();
    let path = write_jsonl(dir.path(), "golden.jsonl", &[golden_line(dir.path())]);
    let golden = train_golden();
    let janus = tiny();
    let config = DataConfig {
        understanding: vec![path],
        ratio: MixRatio::new(1, 0, 0),
        ..DataConfig::default()
    };
    let mut loader =
        MixedLoader::new(config, janus.processor.clone(), roles(&janus), None).unwrap();
    let batch = loader.next_batch().unwrap();
    assert!(batch.generation.is_none());
    let und = batch.understanding.unwrap();
    let ids: Vec<i64> = und.inputs.input_ids.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(ids, golden["und_input_ids"], "input ids");
    assert_eq!(und.labels, golden["und_labels"], "labels");
    let mask: Vec<i64> = und
        .inputs
        .attention_mask
        .iter()
        .map(|&m| i64::from(m))
        .collect();
    assert_eq!(mask, golden["und_attention_mask"]);
    // Labelled: the answer (with its leading space) and the closing EOS.
    let first = und.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
    assert!(und.labels[..first].iter().all(|&l| l == IGNORE_INDEX));
    assert_eq!(
        *und.labels.last().unwrap(),
        i64::from(janus.processor.special_tokens().eos)
    );
}

#[test]
fn every_or_only_the_last_answer_is_labelled() {
    let janus = tiny();
    let p = &janus.processor;
    let roles = janus.roles();
    let (user, assistant) = (roles.user.as_str(), roles.assistant.as_str());
    let conversation = [
        Message::new(user, "Hello there"),
        Message::new(assistant, "Hi."),
        Message::new(user, "How are you?"),
        Message::new(assistant, "Fine, thanks."),
    ];
    let system = janus_core::processor::SYSTEM_PROMPT;
    let (prompt, ids, all) = label_prompt(p, &conversation, system, LabelTurns::All).unwrap();
    assert_eq!(prompt, p.understanding_prompt(&conversation).unwrap());
    let labelled = |labels: &[i64]| -> String {
        let ids: Vec<u32> = labels
            .iter()
            .filter(|&&l| l != IGNORE_INDEX)
            .map(|&l| l as u32)
            .collect();
        p.tokenizer().decode_with_special(&ids).unwrap()
    };
    let eos = "<｜end▁of▁sentence｜>";
    assert_eq!(labelled(&all), format!(" Hi.{eos} Fine, thanks.{eos}"));
    let (_, _, last) = label_prompt(p, &conversation, system, LabelTurns::Last).unwrap();
    assert_eq!(labelled(&last), format!(" Fine, thanks.{eos}"));
    assert_eq!(all.len(), ids.len());
    // Cross-check against the loss module's labelling of the same conversation.
    let reference = janus_train::loss::understanding_labels(p, &conversation, &ids).unwrap();
    assert_eq!(all, reference);
}

// ---------------------------------------------------------------------------------------------
// Length limits

#[test]
fn overlong_samples_are_truncated_or_skipped_and_counted() {
    let janus = tiny();
    let p = &janus.processor;
    let dir = dataset_dir();
    let record = ConversationRecord {
        system: None,
        turns: vec![janus_train::data::Turn {
            user: format!("{TAG}\nDescribe this image in detail."),
            assistant: "A dog sits on a wooden table.".into(),
        }],
        images: vec![dir.path().join("img/scene.png")],
    };
    let images: Vec<RgbImage> = vec![load_image(&record.images[0]).unwrap()];
    let r = roles(&janus);
    let full = match build_understanding(
        p,
        &record,
        &images,
        &r,
        LabelTurns::All,
        None,
        Overlong::Skip,
    )
    .unwrap()
    {
        SampleOutcome::Fits(s) => s,
        other => panic!("{other:?}"),
    };
    let len = full.len();
    assert_eq!(len, 134);
    let first_label = full.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();

    // Cut inside the answer: kept, truncated, labels still aligned.
    let cut = first_label + 3;
    match build_understanding(
        p,
        &record,
        &images,
        &r,
        LabelTurns::All,
        Some(cut),
        Overlong::Truncate,
    )
    .unwrap()
    {
        SampleOutcome::Truncated(s) => {
            assert_eq!(s.len(), cut);
            assert_eq!(s.labels, full.labels[..cut]);
            assert_eq!(s.input.num_images, 1);
        }
        other => panic!("{other:?}"),
    }
    // Cut inside the image run: the image goes, and with it every label → skipped.
    let start = full
        .input
        .input_ids
        .iter()
        .position(|&i| i == p.special_tokens().image_start)
        .unwrap();
    assert!(matches!(
        build_understanding(
            p,
            &record,
            &images,
            &r,
            LabelTurns::All,
            Some(start + 5),
            Overlong::Truncate
        )
        .unwrap(),
        SampleOutcome::Skipped { len: 134 }
    ));
    assert!(matches!(
        build_understanding(
            p,
            &record,
            &images,
            &r,
            LabelTurns::All,
            Some(cut),
            Overlong::Skip
        )
        .unwrap(),
        SampleOutcome::Skipped { len: 134 }
    ));

    // Through the loader: one short text-only line and one long image line.
    let path = write_jsonl(
        dir.path(),
        "mixed.jsonl",
        &[
            r#"{"query": "Hi", "response": "Hello."}"#.into(),
            r#"{"query": "<image>\nDescribe this image in detail.", "response": "A dog sits on a wooden table.", "images": ["img/scene.png"]}"#.into(),
        ],
    );
    let run = |overlong| {
        let config = DataConfig {
            understanding: vec![path.clone()],
            ratio: MixRatio::new(1, 0, 0),
            batch_size: 4,
            max_len: Some(cut),
            overlong,
            shuffle: false,
            ..DataConfig::default()
        };
        let mut loader = MixedLoader::new(config, p.clone(), r.clone(), None).unwrap();
        let batch = loader.next_batch().unwrap().understanding.unwrap();
        assert!(batch.inputs.seq_len <= cut);
        loader.stats().clone()
    };
    let truncated = run(Overlong::Truncate);
    assert_eq!((truncated.truncated, truncated.skipped_overlong), (2, 0));
    let skipped = run(Overlong::Skip);
    // File order, cycling: short, long (skipped), short, long (skipped), short, long (skipped),
    // short — four rows, three skips.
    assert_eq!((skipped.truncated, skipped.skipped_overlong), (0, 3));
    assert_eq!(skipped.rows[Kind::Understanding.index()], 4);
}

// ---------------------------------------------------------------------------------------------
// Text-to-image

#[test]
fn generation_prompt_matches_the_golden() {
    let janus = tiny();
    let golden = train_golden();
    let full = cases()["train"]["generation_prompt"]
        .as_str()
        .unwrap()
        .to_owned();
    // "User: {prompt}\n\nAssistant:<begin_of_image>"
    let prompt = full
        .strip_prefix("User: ")
        .and_then(|s| s.strip_suffix("\n\nAssistant:<begin_of_image>"))
        .unwrap();
    let ids = generation_prompt_ids(&janus.processor, prompt, &roles(&janus)).unwrap();
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(ids, golden["gen_text_ids"]);
}

#[test]
fn t2i_images_are_resized_by_the_short_side_and_centre_cropped() {
    for (name, size) in [("banner.png", 32), ("scene.png", 32), ("scene.png", 64)] {
        let image = load_image(goldens().join(name)).unwrap();
        let crop = center_crop(&image, size);
        assert_eq!(
            (crop.width(), crop.height()),
            (size as u32, size as u32),
            "{name}"
        );
        let px = to_unit_range(&crop);
        assert_eq!(px.len(), 3 * size * size);
        assert!(px.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
    // 64×32: the short side is already 32, so no resampling; the crop keeps columns 16..48.
    let mut image = RgbImage::new(64, 32);
    for (x, _, px) in image.enumerate_pixels_mut() {
        *px = image::Rgb(if (16..48).contains(&x) {
            [0, 255, 0]
        } else {
            [255, 0, 0]
        });
    }
    let crop = center_crop(&image, 32);
    assert!(crop.pixels().all(|p| p.0 == [0, 255, 0]));
    let px = to_unit_range(&crop);
    assert_eq!((px[0], px[32 * 32], px[2 * 32 * 32]), (-1.0, 1.0, -1.0));
}

fn t2i_file(dir: &Path) -> PathBuf {
    write_jsonl(
        dir,
        "t2i.jsonl",
        &[
            r#"{"prompt": "a wide banner", "image": "img/banner.png"}"#.into(),
            r#"{"prompt": "a photo of a red cube on a wooden table", "image": "img/scene.png"}"#
                .into(),
        ],
    )
}

#[test]
fn codes_are_cached_and_not_re_encoded() {
    let janus = tiny();
    let dir = dataset_dir();
    let cache = dir.path().join("cache");
    let config = DataConfig {
        generation: vec![t2i_file(dir.path())],
        ratio: MixRatio::new(0, 0, 1),
        batch_size: 2,
        cfg_dropout: 0.0,
        shuffle: false,
        cache_dir: Some(cache.clone()),
        ..DataConfig::default()
    };
    let grid = janus.config.gen_vision.grid();

    let (encoder, encoded) = counting(&janus);
    let mut first = MixedLoader::new(
        config.clone(),
        janus.processor.clone(),
        roles(&janus),
        Some(encoder),
    )
    .unwrap();
    let batch = first.next_batch().unwrap().generation.unwrap();
    assert_eq!(encoded.load(Ordering::SeqCst), 2);
    assert_eq!(batch.codes.len(), 2);
    assert!(batch.codes.iter().all(|c| c.len() == grid * grid));
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        2,
        "one file per image"
    );
    // The next epoch within the same run reads the cache.
    let again = first.next_batch().unwrap().generation.unwrap();
    assert_eq!(encoded.load(Ordering::SeqCst), 2);
    assert_eq!(again, batch);
    assert_eq!(
        (first.stats().codes_encoded, first.stats().codes_cached),
        (2, 2)
    );

    // A new loader (a new run) with the same cache directory encodes nothing.
    let (encoder, encoded2) = counting(&janus);
    let mut second = MixedLoader::new(
        config,
        janus.processor.clone(),
        roles(&janus),
        Some(encoder),
    )
    .unwrap();
    assert_eq!(second.next_batch().unwrap().generation.unwrap(), batch);
    assert_eq!(encoded2.load(Ordering::SeqCst), 0);

    // The cached codes are the VQ model's codes of the cropped image.
    let vq = VqCodeEncoder::from_janus(&janus).unwrap();
    let image = load_image(dir.path().join("img/banner.png")).unwrap();
    let direct = vq
        .encode(&to_unit_range(&center_crop(&image, vq.image_size())), 1)
        .unwrap();
    assert_eq!(direct[0], batch.codes[0]);
    // The key changes with the model identity.
    let banner = dir.path().join("img/banner.png");
    let a = CodeCache::key(&banner, 32, vq.identity()).unwrap();
    let b = CodeCache::key(&banner, 32, "another model").unwrap();
    assert_ne!(a, b);
    let disk = CodeCache::new(Some(cache)).unwrap();
    assert_eq!(disk.get(&a), Some(batch.codes[0].clone()));
    assert_eq!(disk.get(&b), None);
}

#[test]
fn warming_the_cache_encodes_each_image_once_up_front() {
    let janus = tiny();
    let dir = dataset_dir();
    let config = DataConfig {
        generation: vec![t2i_file(dir.path())],
        ratio: MixRatio::new(0, 0, 1),
        batch_size: 2,
        ..DataConfig::default()
    };
    let (encoder, encoded) = counting(&janus);
    let mut loader = MixedLoader::new(
        config,
        janus.processor.clone(),
        roles(&janus),
        Some(encoder),
    )
    .unwrap();
    let before = loader.state();
    assert_eq!(loader.warm_code_cache(1).unwrap(), 2);
    assert_eq!(loader.warm_code_cache(8).unwrap(), 0, "already cached");
    assert_eq!(loader.state(), before, "warming does not move the position");
    loader.next_batch().unwrap();
    assert_eq!(encoded.load(Ordering::SeqCst), 2);
    assert_eq!(loader.stats().codes_cached, 2);
}

#[test]
fn prompt_dropout_has_the_requested_frequency_and_is_reproducible() {
    let n = 20_000u64;
    let p = 0.1;
    let drops: Vec<bool> = (0..n)
        .map(|i| prompt_dropout(7, i / 1000, i % 1000, p))
        .collect();
    let rate = drops.iter().filter(|&&d| d).count() as f64 / n as f64;
    assert!((rate - p).abs() < 0.01, "rate {rate}");
    let again: Vec<bool> = (0..n)
        .map(|i| prompt_dropout(7, i / 1000, i % 1000, p))
        .collect();
    assert_eq!(drops, again, "same seed, same drops");
    let other: Vec<bool> = (0..n)
        .map(|i| prompt_dropout(8, i / 1000, i % 1000, p))
        .collect();
    assert_ne!(drops, other, "another seed, other drops");
    assert!(!prompt_dropout(7, 0, 0, 0.0) && prompt_dropout(7, 0, 0, 1.0));

    assert_eq!(
        unconditional_ids(&[0, 5, 6, 7, 386], 384),
        vec![0, 384, 384, 384, 386]
    );

    // In the loader: p = 1 makes every prompt unconditional.
    let janus = tiny();
    let dir = dataset_dir();
    let config = DataConfig {
        generation: vec![t2i_file(dir.path())],
        ratio: MixRatio::new(0, 0, 1),
        batch_size: 2,
        cfg_dropout: 1.0,
        ..DataConfig::default()
    };
    let (encoder, _) = counting(&janus);
    let mut loader = MixedLoader::new(
        config,
        janus.processor.clone(),
        roles(&janus),
        Some(encoder),
    )
    .unwrap();
    let batch = loader.next_batch().unwrap().generation.unwrap();
    let s = janus.processor.special_tokens();
    for ids in &batch.text_ids {
        assert_eq!(ids[0], s.bos);
        assert_eq!(*ids.last().unwrap(), s.image_start);
        assert!(ids[1..ids.len() - 1].iter().all(|&i| i == s.pad));
    }
    assert_eq!(loader.stats().unconditional, 2);
}

// ---------------------------------------------------------------------------------------------
// Mixing and resumption

/// Five understanding lines (with images), three text lines and two text-to-image lines.
fn mixed_config(dir: &Path) -> DataConfig {
    let und: Vec<String> = (0..5)
        .map(|i| {
            let image = if i % 2 == 0 { "img/scene.png" } else { "img/banner.png" };
            format!(
                r#"{{"query": "<image>\nQuestion {i}?", "response": "Answer {i}.", "images": ["{image}"]}}"#
            )
        })
        .collect();
    let text: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"messages": [{{"role": "user", "content": "Text {i}"}}, {{"role": "assistant", "content": "Reply {i}"}}]}}"#))
        .collect();
    DataConfig {
        understanding: vec![write_jsonl(dir, "und.jsonl", &und)],
        text: vec![write_jsonl(dir, "text.jsonl", &text)],
        generation: vec![t2i_file(dir)],
        ratio: MixRatio::JANUS_PRO_STAGE_3,
        batch_size: 10,
        seed: 1234,
        cfg_dropout: 0.5,
        cache_dir: Some(dir.join("cache")),
        ..DataConfig::default()
    }
}

#[test]
fn mixing_ratio_is_respected() {
    let janus = tiny();
    let dir = dataset_dir();
    let config = mixed_config(dir.path());
    let (encoder, _) = counting(&janus);
    let mut loader = MixedLoader::new(
        config.clone(),
        janus.processor.clone(),
        roles(&janus),
        Some(encoder),
    )
    .unwrap();
    for _ in 0..3 {
        let batch = loader.next_batch().unwrap();
        // 5 understanding + 1 text rows share the understanding batch; 4 text-to-image rows.
        let und = batch.understanding.unwrap();
        assert_eq!(und.inputs.batch_size, 6);
        assert_eq!(und.labels.len(), 6 * und.inputs.seq_len);
        assert_eq!(
            und.inputs
                .images_per_row
                .iter()
                .filter(|&&n| n == 1)
                .count(),
            5
        );
        assert_eq!(batch.generation.unwrap().codes.len(), 4);
    }
    assert_eq!(loader.stats().rows, [15, 3, 12]);

    // Smaller batches spread the ratio over steps.
    let mut small = MixedLoader::new(
        DataConfig {
            batch_size: 3,
            ..config
        },
        janus.processor.clone(),
        roles(&janus),
        Some(counting(&janus).0),
    )
    .unwrap();
    for _ in 0..10 {
        small.next_batch().unwrap();
    }
    assert_eq!(small.stats().rows, [15, 3, 12]);

    let mut scheduler = KindScheduler::new(MixRatio::JANUS_PRO_STAGE_2);
    let mut counts = [0; 3];
    for _ in 0..1000 {
        counts[scheduler.next_kind().index()] += 1;
    }
    assert_eq!(counts, [200, 300, 500]);
}

#[test]
fn shuffling_is_seeded_and_covers_each_epoch() {
    let janus = tiny();
    let dir = dataset_dir();
    let config = DataConfig {
        ratio: MixRatio::new(1, 0, 0),
        batch_size: 5,
        ..mixed_config(dir.path())
    };
    let prompts = |config: DataConfig| -> Vec<Vec<String>> {
        let mut loader =
            MixedLoader::new(config, janus.processor.clone(), roles(&janus), None).unwrap();
        (0..2)
            .map(|_| {
                let mut epoch = loader
                    .next_batch()
                    .unwrap()
                    .understanding
                    .unwrap()
                    .inputs
                    .sft_format;
                epoch.sort();
                epoch
            })
            .collect()
    };
    let a = prompts(config.clone());
    // Each batch is one full epoch of the five records.
    assert_eq!(a[0], a[1]);
    assert_eq!(
        a[0].iter().collect::<std::collections::BTreeSet<_>>().len(),
        5
    );

    let order = |config: DataConfig| {
        let mut loader =
            MixedLoader::new(config, janus.processor.clone(), roles(&janus), None).unwrap();
        (0..3)
            .map(|_| {
                loader
                    .next_batch()
                    .unwrap()
                    .understanding
                    .unwrap()
                    .inputs
                    .sft_format
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        order(config.clone()),
        order(config.clone()),
        "same seed, same order"
    );
    assert_ne!(
        order(config.clone()),
        order(DataConfig { seed: 99, ..config }),
        "another seed, another order"
    );
}

#[test]
fn a_resumed_loader_continues_exactly() {
    let janus = tiny();
    let dir = dataset_dir();
    let config = DataConfig {
        batch_size: 4,
        ..mixed_config(dir.path())
    };
    let make = || {
        MixedLoader::new(
            config.clone(),
            janus.processor.clone(),
            roles(&janus),
            Some(counting(&janus).0),
        )
        .unwrap()
    };

    let mut straight = make();
    let expected: Vec<MixedBatch> = (0..9).map(|_| straight.next_batch().unwrap()).collect();

    let mut interrupted = make();
    let head: Vec<MixedBatch> = (0..4).map(|_| interrupted.next_batch().unwrap()).collect();
    assert_eq!(head, expected[..4]);
    // Save the state as a checkpoint would (JSON), then start a fresh loader from it.
    let saved = serde_json::to_string(&interrupted.state()).unwrap();
    drop(interrupted);
    let state: DataState = serde_json::from_str(&saved).unwrap();
    assert_eq!(state.batches, 4);
    let mut resumed = MixedLoader::resume(
        config.clone(),
        janus.processor.clone(),
        roles(&janus),
        Some(counting(&janus).0),
        &state,
    )
    .unwrap();
    let tail: Vec<MixedBatch> = (0..5).map(|_| resumed.next_batch().unwrap()).collect();
    assert_eq!(
        tail,
        expected[4..],
        "resumed batches equal the uninterrupted run's"
    );
    assert_eq!(resumed.state(), straight.state());
    assert!(
        straight.state().streams[Kind::Understanding.index()].epoch >= 2,
        "the run crossed epoch boundaries"
    );

    // A state from another seed is refused.
    let err = MixedLoader::resume(
        DataConfig { seed: 1, ..config },
        janus.processor.clone(),
        roles(&janus),
        Some(counting(&janus).0),
        &state,
    )
    .unwrap_err();
    assert!(matches!(err, DataError::StateMismatch(_)), "{err}");
}

#[test]
fn configuration_errors() {
    let janus = tiny();
    let dir = dataset_dir();
    let config = mixed_config(dir.path());
    // Text-to-image data needs an encoder.
    let err =
        MixedLoader::new(config.clone(), janus.processor.clone(), roles(&janus), None).unwrap_err();
    assert!(matches!(err, DataError::Config(_)), "{err}");
    // A kind with a non-zero ratio and no file.
    let err = MixedLoader::new(
        DataConfig {
            text: vec![],
            ..config.clone()
        },
        janus.processor.clone(),
        roles(&janus),
        Some(counting(&janus).0),
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::EmptyDataset { kind: "text", .. }),
        "{err}"
    );
    // A ratio of zero for a kind means its files are not even read.
    let loader = MixedLoader::new(
        DataConfig {
            text: vec![dir.path().join("does-not-exist.jsonl")],
            ratio: MixRatio::JANUS_PRO_STAGE_1,
            ..config
        },
        janus.processor.clone(),
        roles(&janus),
        Some(counting(&janus).0),
    );
    assert!(loader.is_ok());
}

/// A loader can move to a prefetching thread.
#[test]
fn the_loader_is_send() {
    fn send<T: Send>() {}
    send::<MixedLoader>();
}
