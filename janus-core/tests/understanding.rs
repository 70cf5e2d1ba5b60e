//! The understanding pipeline end to end on every fixture: greedy answers equal the reference,
//! streaming, sampling, batching, chat, stop strings and the errors a user can cause.

use std::ops::ControlFlow;

use burn::tensor::Device;
use janus_core::processor::{Message, RgbImage};
use janus_core::{AnswerOptions, Janus, JanusError, LoadOptions, SamplingOptions, StopReason};
use janus_testutil::{model_dirs, read_goldens};

struct Case {
    messages: Vec<Message>,
    images: Vec<RgbImage>,
    generated: Vec<i64>,
    answer_text: String,
}

/// Loads every fixture that has understanding cases, with its cases.
fn fixtures() -> Vec<(Janus, Vec<(String, Case)>)> {
    let device = Device::flex();
    let mut out = Vec::new();
    for dir in model_dirs() {
        let Ok(text) = std::fs::read_to_string(dir.join("goldens/cases.json")) else {
            continue;
        };
        let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
        let janus = Janus::load(&dir, &LoadOptions::default(), &device).unwrap();
        let mut list = Vec::new();
        for name in ["single", "multi", "text_only"] {
            let golden = dir.join(format!("goldens/understanding_{name}.safetensors"));
            if !golden.exists() {
                continue;
            }
            let case = &cases["understanding"][name];
            let messages: Vec<Message> =
                serde_json::from_value(case["conversation"].clone()).unwrap();
            let images = janus
                .processor
                .load_images(&messages, dir.join("goldens"))
                .unwrap();
            list.push((
                name.to_string(),
                Case {
                    messages,
                    images,
                    generated: read_goldens(&golden)["generated_ids"].ints.clone(),
                    answer_text: case["answer_text"].as_str().unwrap_or_default().to_string(),
                },
            ));
        }
        out.push((janus, list));
    }
    assert!(!out.is_empty(), "no fixture with goldens/cases.json");
    out
}

fn greedy(max_new_tokens: usize) -> AnswerOptions {
    AnswerOptions {
        max_new_tokens,
        ..Default::default()
    }
}

#[test]
fn greedy_answers_match_the_reference_and_stream_whole() {
    for (janus, cases) in fixtures() {
        let eos = janus.processor.special_tokens().eos as i64;
        for (name, case) in &cases {
            let mut streamed = String::new();
            let answer = janus
                .answer_with_images(
                    &case.messages,
                    &case.images,
                    &greedy(case.generated.len()),
                    |p| {
                        streamed.push_str(p);
                        ControlFlow::Continue(())
                    },
                )
                .unwrap();
            let mut want: Vec<i64> = case.generated.clone();
            let expect_stop = if want.last() == Some(&eos) {
                want.pop();
                StopReason::Eos
            } else {
                StopReason::MaxNewTokens
            };
            let got: Vec<i64> = answer.token_ids.iter().map(|&i| i as i64).collect();
            assert_eq!(got, want, "{name}: token ids");
            assert_eq!(answer.stop, expect_stop, "{name}: stop reason");
            assert_eq!(answer.text, case.answer_text, "{name}: decoded answer");
            assert_eq!(
                streamed, answer.text,
                "{name}: streamed pieces must add up to the answer"
            );
        }
    }
}

#[test]
fn sampling_is_seeded() {
    for (janus, cases) in fixtures() {
        let (_, case) = &cases[0];
        let opts = |seed| AnswerOptions {
            max_new_tokens: 12,
            sampling: SamplingOptions {
                temperature: 1.0,
                top_k: Some(50),
                top_p: Some(0.95),
                seed,
            },
            ..Default::default()
        };
        let run = |seed| {
            janus
                .answer_with_images(&case.messages, &case.images, &opts(seed), |_| {
                    ControlFlow::Continue(())
                })
                .unwrap()
        };
        let (a, b, c) = (run(1), run(1), run(2));
        assert_eq!(a, b, "same seed, same answer");
        assert_ne!(
            a.token_ids, c.token_ids,
            "different seeds should differ on a random model"
        );
    }
}

#[test]
fn a_batch_answers_each_row_like_alone() {
    for (janus, cases) in fixtures() {
        let opts = greedy(6);
        let batch: Vec<(Vec<Message>, Vec<RgbImage>)> = cases
            .iter()
            .map(|(_, c)| (c.messages.clone(), c.images.clone()))
            .collect();
        let mut pieces = vec![String::new(); batch.len()];
        let answers = janus
            .answer_batch(&batch, &opts, |row, p| {
                pieces[row].push_str(p);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(answers.len(), batch.len());
        for ((name, case), (answer, streamed)) in cases.iter().zip(answers.iter().zip(&pieces)) {
            let alone = janus
                .answer_with_images(&case.messages, &case.images, &opts, |_| {
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(
                answer, &alone,
                "{name}: batched answer differs from the single one"
            );
            assert_eq!(streamed, &answer.text);
        }
    }
}

#[test]
fn stop_strings_cut_the_answer() {
    for (janus, cases) in fixtures() {
        let (_, case) = &cases[0];
        let full = janus
            .answer_with_images(&case.messages, &case.images, &greedy(8), |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        let chars: Vec<char> = full.text.chars().collect();
        if chars.len() < 3 {
            continue;
        }
        let stop: String = chars[1..3].iter().collect();
        let cut = full.text.find(&stop).unwrap();
        let opts = AnswerOptions {
            stop_strings: vec![stop],
            ..greedy(8)
        };
        let mut streamed = String::new();
        let answer = janus
            .answer_with_images(&case.messages, &case.images, &opts, |p| {
                streamed.push_str(p);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(answer.stop, StopReason::StopString);
        assert_eq!(answer.text, full.text[..cut]);
        assert_eq!(streamed, answer.text);
    }
}

#[test]
fn chat_keeps_the_history() {
    for (janus, cases) in fixtures() {
        let image = cases
            .iter()
            .find_map(|(_, c)| c.images.first().cloned())
            .unwrap();
        let mut chat = janus.chat();
        let first = chat
            .ask(
                "What is this?",
                std::slice::from_ref(&image),
                &greedy(4),
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
        let second = chat
            .ask("And now?", &[], &greedy(4), |_| ControlFlow::Continue(()))
            .unwrap();
        let history = chat.history();
        assert_eq!(history.len(), 4);
        assert_eq!(history[1].content, first.text);
        assert_eq!(history[3].content, second.text);
        assert!(history[0].content.starts_with("<image_placeholder>"));

        // The second turn equals answering the whole conversation at once.
        let mut conversation = history.to_vec();
        conversation[3].content.clear();
        let again = janus
            .answer_with_images(&conversation, &[image], &greedy(4), |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(again, second);
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    for (janus, cases) in fixtures() {
        let roles = janus.roles();
        let (_, case) = cases.iter().find(|(_, c)| !c.images.is_empty()).unwrap();
        let opts = greedy(2);
        let ask = |content: &str, images: &[RgbImage], o: &AnswerOptions| {
            let conv = vec![Message::new(&roles.user, content), roles.assistant_cue()];
            janus.answer_with_images(&conv, images, o, |_| ControlFlow::Continue(()))
        };
        let two = vec![case.images[0].clone(), case.images[0].clone()];
        let err = ask("<image_placeholder>\nhi", &two, &opts).unwrap_err();
        assert!(err.to_string().contains("placeholder"), "{err}");
        let err = ask(
            "<image_placeholder><image_placeholder>\nhi",
            &two[..1],
            &opts,
        )
        .unwrap_err();
        assert!(err.to_string().contains("placeholder"), "{err}");
        let err = janus
            .answer_with_images(&[], &[], &opts, |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(err.to_string().contains("no messages"), "{err}");

        let long = "word ".repeat(janus.config.language.max_position_embeddings);
        let err = ask(&long, &[], &opts).unwrap_err();
        assert!(
            err.to_string().contains("context") || err.to_string().contains("long"),
            "{err}"
        );

        for sampling in [
            SamplingOptions {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingOptions {
                top_p: Some(1.5),
                ..Default::default()
            },
            SamplingOptions {
                top_p: Some(0.0),
                ..Default::default()
            },
        ] {
            let o = AnswerOptions {
                sampling,
                ..greedy(2)
            };
            assert!(
                ask("hi", &[], &o).is_err(),
                "{:?} must be refused",
                o.sampling
            );
        }

        let empty = RgbImage::new(0, 5);
        assert!(
            ask("<image_placeholder>\nhi", &[empty], &opts).is_err(),
            "zero-sized image"
        );
        let thin = RgbImage::new(1, 40);
        assert!(
            ask("<image_placeholder>\nhi", &[thin], &opts).is_ok(),
            "a 1×N image is valid"
        );

        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("not-an-image.png");
        std::fs::write(&bogus, b"definitely not a png").unwrap();
        let conv = vec![
            Message::new(&roles.user, "<image_placeholder>\nhi")
                .with_image(bogus.to_str().unwrap()),
            roles.assistant_cue(),
        ];
        let err = janus
            .answer(&conv, &opts, |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(err.to_string().contains("not-an-image.png"), "{err}");
        assert!(matches!(
            janus.answer(
                &[
                    Message::new(&roles.user, "<image_placeholder>")
                        .with_image("/nonexistent/x.png"),
                    roles.assistant_cue()
                ],
                &opts,
                |_| ControlFlow::Continue(())
            ),
            Err(JanusError::Processor(_))
        ));
    }
}

/// `ask` builds the conversation from the model's own roles and placeholders: it answers as
/// the hand-written template does.
#[test]
fn ask_applies_the_model_roles_and_placeholders() {
    for (janus, cases) in fixtures() {
        let image = cases
            .iter()
            .find_map(|(_, c)| c.images.first().cloned())
            .unwrap();
        let roles = janus.roles();
        let tag = &janus.processor.config().image_tag;
        let by_hand = vec![
            Message::new(&roles.user, format!("{tag}\n{tag}\nWhat is this?")),
            Message::new(&roles.assistant, ""),
        ];
        let images = [image.clone(), image];
        let want = janus
            .answer_with_images(&by_hand, &images, &greedy(5), |_| ControlFlow::Continue(()))
            .unwrap();
        let got = janus
            .ask("What is this?", &images, &greedy(5), |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(got, want);
        let text_only = janus
            .ask("Hello", &[], &greedy(3), |_| ControlFlow::Continue(()))
            .unwrap();
        let text_by_hand = vec![
            Message::new(&roles.user, "Hello"),
            Message::new(&roles.assistant, ""),
        ];
        let want = janus
            .answer_with_images(
                &text_by_hand,
                &[],
                &greedy(3),
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
        assert_eq!(text_only, want);
    }
}

/// Returning `Break` from the text callback stops the answer; the answer holds exactly the
/// text the callback saw.
#[test]
fn the_text_callback_can_stop_an_answer() {
    for (janus, cases) in fixtures() {
        let (_, case) = &cases[0];
        let full = janus
            .answer_with_images(&case.messages, &case.images, &greedy(8), |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        if full.text.is_empty() {
            continue;
        }
        let mut seen = String::new();
        let mut calls = 0;
        let stopped = janus
            .answer_with_images(&case.messages, &case.images, &greedy(8), |p| {
                seen.push_str(p);
                calls += 1;
                ControlFlow::Break(())
            })
            .unwrap();
        assert_eq!(calls, 1, "no piece after Break");
        assert_eq!(stopped.stop, StopReason::Cancelled);
        assert_eq!(stopped.text, seen);
        assert!(full.text.starts_with(&stopped.text));
        assert!(stopped.token_ids.len() < full.token_ids.len() || full.token_ids.len() == 1);

        // In a batch, only the row whose callback broke stops.
        let batch = vec![
            (case.messages.clone(), case.images.clone()),
            (case.messages.clone(), case.images.clone()),
        ];
        let answers = janus
            .answer_batch(&batch, &greedy(8), |row, _| {
                if row == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(answers[0].stop, StopReason::Cancelled);
        assert_eq!(answers[1], full);
    }
}
