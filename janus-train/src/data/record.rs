//! The JSONL record formats: conversations (ms-swift `query`/`response`/`history` or
//! `messages`) and text-to-image pairs (`prompt`/`image`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::jsonl::{ParseContext, Record, RecordError};

/// The image tag of ms-swift datasets, replaced by the model's image placeholder.
const SWIFT_IMAGE_TAG: &str = "<image>";

/// One user question and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The user's message, image tags already replaced by the model's placeholder.
    pub user: String,
    /// The assistant's answer.
    pub assistant: String,
}

/// A training conversation: earlier turns first, the final query/response last.
///
/// Parsed from either form (one JSON object per line):
///
/// ```json
/// {"query": "<image>What is this?", "response": "A cat.", "images": ["cat.png"], "history": [["Hi", "Hello!"]], "system": "optional"}
/// {"messages": [{"role": "system", "content": "optional"}, {"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A cat."}], "images": ["cat.png"]}
/// ```
///
/// `<image>` (and the model's own tag, `<image_placeholder>`) mark where images go, in the order
/// of `images`; without any tag, the images are put in front of the first user message, as
/// ms-swift does. Image paths are relative to the JSONL file's directory (absolute paths are
/// kept) and must exist. Roles must alternate user/assistant and the last message must be the
/// assistant's, with non-empty text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    /// A system prompt given by the line (`system` field or a leading `system` message); `None`
    /// means the understanding system prompt.
    pub system: Option<String>,
    /// The turns in order.
    pub turns: Vec<Turn>,
    /// Resolved image paths, one per placeholder, in order.
    pub images: Vec<PathBuf>,
}

/// A text-to-image pair: `{"prompt": "a red cube", "image": "cube.png"}`.
///
/// The image path is relative to the JSONL file's directory and must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct T2iRecord {
    /// The caption the image is generated from.
    pub prompt: String,
    /// The resolved image path.
    pub image: PathBuf,
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value, RecordError> {
    obj.get(key)
        .ok_or_else(|| RecordError::Malformed(format!("missing field `{key}`")))
}

fn string<'a>(value: &'a Value, what: &str) -> Result<&'a str, RecordError> {
    value
        .as_str()
        .ok_or_else(|| RecordError::Malformed(format!("`{what}` must be a string")))
}

fn non_empty(text: &str, what: &str) -> Result<(), RecordError> {
    // The template turns an empty message into a bare generation cue, which would break the
    // user/assistant alternation of the separators.
    if text.trim().is_empty() {
        return Err(RecordError::Malformed(format!("`{what}` is empty")));
    }
    Ok(())
}

fn as_object(value: &Value) -> Result<&Map<String, Value>, RecordError> {
    value
        .as_object()
        .ok_or_else(|| RecordError::Malformed("a line must be a JSON object".into()))
}

/// Resolves an image path against the JSONL file's directory and checks that it exists.
fn resolve_image(raw: &str, base_dir: &Path) -> Result<PathBuf, RecordError> {
    if raw.is_empty() {
        return Err(RecordError::Malformed("empty image path".into()));
    }
    let path = base_dir.join(raw);
    if !path.is_file() {
        return Err(RecordError::MissingImage(path));
    }
    Ok(path)
}

fn images_field(obj: &Map<String, Value>, base_dir: &Path) -> Result<Vec<PathBuf>, RecordError> {
    let raw: Vec<&str> = match obj.get("images") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| string(v, "images[]"))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(RecordError::Malformed(
                "`images` must be a string or an array of strings".into(),
            ));
        }
    };
    raw.into_iter()
        .map(|p| resolve_image(p, base_dir))
        .collect()
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, RecordError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(string(v, key)?.to_owned())),
    }
}

impl ConversationRecord {
    /// Number of images.
    pub fn num_images(&self) -> usize {
        self.images.len()
    }

    /// Replaces `<image>` tags by the model's tag, checks the tag count against the images, and
    /// puts untagged images in front of the first user message.
    fn place_images(&mut self, image_tag: &str) -> Result<(), RecordError> {
        for turn in &mut self.turns {
            turn.user = turn.user.replace(SWIFT_IMAGE_TAG, image_tag);
            turn.assistant = turn.assistant.replace(SWIFT_IMAGE_TAG, image_tag);
            if turn.assistant.contains(image_tag) {
                return Err(RecordError::Malformed(
                    "image tags are only allowed in user messages".into(),
                ));
            }
        }
        let tags: usize = self
            .turns
            .iter()
            .map(|t| t.user.matches(image_tag).count())
            .sum();
        let n = self.images.len();
        if tags == 0 && n > 0 {
            let first = &mut self.turns[0].user;
            *first = format!("{}{first}", format!("{image_tag}\n").repeat(n));
        } else if tags != n {
            return Err(RecordError::Malformed(format!(
                "{tags} image tag(s) but {n} image(s)"
            )));
        }
        Ok(())
    }

    fn from_swift(obj: &Map<String, Value>, ctx: &ParseContext) -> Result<Self, RecordError> {
        let query = string(field(obj, "query")?, "query")?;
        let response = string(field(obj, "response")?, "response")?;
        let mut turns = Vec::new();
        match obj.get("history") {
            None | Some(Value::Null) => {}
            Some(Value::Array(pairs)) => {
                for (i, pair) in pairs.iter().enumerate() {
                    let bad = || {
                        RecordError::Malformed(format!(
                            "`history[{i}]` must be a [query, response] pair of strings"
                        ))
                    };
                    let pair = pair.as_array().filter(|p| p.len() == 2).ok_or_else(bad)?;
                    let (q, r) = (
                        pair[0].as_str().ok_or_else(bad)?,
                        pair[1].as_str().ok_or_else(bad)?,
                    );
                    non_empty(q, &format!("history[{i}][0]"))?;
                    non_empty(r, &format!("history[{i}][1]"))?;
                    turns.push(Turn {
                        user: q.to_owned(),
                        assistant: r.to_owned(),
                    });
                }
            }
            Some(_) => {
                return Err(RecordError::Malformed(
                    "`history` must be an array of [query, response] pairs".into(),
                ));
            }
        }
        non_empty(query, "query")?;
        non_empty(response, "response")?;
        turns.push(Turn {
            user: query.to_owned(),
            assistant: response.to_owned(),
        });
        let mut record = Self {
            system: optional_string(obj, "system")?,
            turns,
            images: images_field(obj, &ctx.base_dir)?,
        };
        record.place_images(&ctx.image_tag)?;
        Ok(record)
    }

    fn from_messages(
        messages: &[Value],
        obj: &Map<String, Value>,
        ctx: &ParseContext,
    ) -> Result<Self, RecordError> {
        let mut system = optional_string(obj, "system")?;
        let mut turns = Vec::new();
        let mut pending_user: Option<String> = None;
        for (i, message) in messages.iter().enumerate() {
            let m = message.as_object().ok_or_else(|| {
                RecordError::Malformed(format!("`messages[{i}]` must be an object"))
            })?;
            let role = string(field(m, "role")?, &format!("messages[{i}].role"))?;
            let content = string(field(m, "content")?, &format!("messages[{i}].content"))?;
            match role {
                "system" if i == 0 => system = Some(content.to_owned()),
                "system" => {
                    return Err(RecordError::Malformed(format!(
                        "`messages[{i}]`: a system message must come first"
                    )));
                }
                "user" if pending_user.is_none() => {
                    non_empty(content, &format!("messages[{i}].content"))?;
                    pending_user = Some(content.to_owned());
                }
                "assistant" if pending_user.is_some() => {
                    non_empty(content, &format!("messages[{i}].content"))?;
                    turns.push(Turn {
                        user: pending_user.take().unwrap_or_default(),
                        assistant: content.to_owned(),
                    });
                }
                "user" | "assistant" => {
                    return Err(RecordError::Malformed(format!(
                        "`messages[{i}]`: roles must alternate user, assistant"
                    )));
                }
                other => {
                    return Err(RecordError::Malformed(format!(
                        "`messages[{i}]`: unknown role {other:?} (expected user, assistant or system)"
                    )));
                }
            }
        }
        if pending_user.is_some() {
            return Err(RecordError::Malformed(
                "the last message must be the assistant's".into(),
            ));
        }
        if turns.is_empty() {
            return Err(RecordError::Malformed(
                "`messages` has no user/assistant pair".into(),
            ));
        }
        let mut record = Self {
            system,
            turns,
            images: images_field(obj, &ctx.base_dir)?,
        };
        record.place_images(&ctx.image_tag)?;
        Ok(record)
    }
}

impl Record for ConversationRecord {
    fn parse(value: &Value, ctx: &ParseContext) -> Result<Self, RecordError> {
        let obj = as_object(value)?;
        match obj.get("messages") {
            Some(Value::Array(messages)) => Self::from_messages(messages, obj, ctx),
            Some(_) => Err(RecordError::Malformed("`messages` must be an array".into())),
            None if obj.contains_key("query") || obj.contains_key("response") => {
                Self::from_swift(obj, ctx)
            }
            None => Err(RecordError::Malformed(
                "expected `messages` or `query`/`response`".into(),
            )),
        }
    }
}

impl Record for T2iRecord {
    fn parse(value: &Value, ctx: &ParseContext) -> Result<Self, RecordError> {
        let obj = as_object(value)?;
        let prompt = string(field(obj, "prompt")?, "prompt")?;
        let image = string(field(obj, "image")?, "image")?;
        non_empty(prompt, "prompt")?;
        Ok(Self {
            prompt: prompt.to_owned(),
            image: resolve_image(image, &ctx.base_dir)?,
        })
    }
}
