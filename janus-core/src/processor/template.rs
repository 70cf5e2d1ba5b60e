//! Conversations and the `deepseek` chat template (`janus/utils/conversation.py`).

use serde::{Deserialize, Serialize};

use super::error::ProcessorError;

/// The system prompt `VLChatProcessor` puts in front of every understanding conversation.
pub const SYSTEM_PROMPT: &str = "You are a helpful language and vision assistant. \
You are able to understand the visual content that the user provides, \
and assist the user with a variety of tasks using natural language.";

/// Separator after even-indexed (user) messages.
pub const USER_SEPARATOR: &str = "\n\n";
/// Separator after odd-indexed (assistant) messages: the EOS token's text.
pub const ASSISTANT_SEPARATOR: &str = "<｜end▁of▁sentence｜>";
const SEP: &str = USER_SEPARATOR;
const SEP2: &str = ASSISTANT_SEPARATOR;

/// The speaker names a model's chat template writes: `<|User|>`/`<|Assistant|>` for Janus-Pro,
/// `User`/`Assistant` for Janus-1.3B. [`Processor::roles`](super::Processor::roles) picks them
/// from the tokenizer, so callers never type them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatRoles {
    /// The user's role.
    pub user: String,
    /// The assistant's role.
    pub assistant: String,
}

impl ChatRoles {
    /// Janus-Pro's roles, whose names are tokens of its vocabulary.
    pub fn janus_pro() -> Self {
        Self::new("<|User|>", "<|Assistant|>")
    }

    /// Janus-1.3B's roles, plain words.
    pub fn janus_1_3b() -> Self {
        Self::new("User", "Assistant")
    }

    /// Roles from two strings.
    pub fn new(user: impl Into<String>, assistant: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            assistant: assistant.into(),
        }
    }

    /// The user's turn: one `placeholder` line per image, then the text, as the reference
    /// scripts write it.
    pub fn user_turn(&self, text: &str, images: usize, placeholder: &str) -> Message {
        let mut content = String::with_capacity(images * (placeholder.len() + 1) + text.len());
        for _ in 0..images {
            content.push_str(placeholder);
            content.push('\n');
        }
        content.push_str(text);
        Message::new(self.user.clone(), content)
    }

    /// The empty assistant turn that cues the model to answer.
    pub fn assistant_cue(&self) -> Message {
        Message::new(self.assistant.clone(), "")
    }

    /// A finished assistant turn.
    pub fn assistant_turn(&self, text: impl Into<String>) -> Message {
        Message::new(self.assistant.clone(), text)
    }
}

impl From<(&str, &str)> for ChatRoles {
    fn from((user, assistant): (&str, &str)) -> Self {
        Self::new(user, assistant)
    }
}

/// One turn of a conversation, in the JSON shape the reference scripts use.
///
/// ```json
/// {"role": "<|User|>", "content": "<image_placeholder>\nWhat is this?", "images": ["cat.png"]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Speaker name, used verbatim (`<|User|>`/`<|Assistant|>` for Janus-Pro, `User`/`Assistant`
    /// for Janus-1.3B).
    pub role: String,
    /// Text; `<image_placeholder>` marks where each image goes.
    pub content: String,
    /// Image files for this message's placeholders, in order (relative paths are resolved by
    /// the caller, see [`Processor::load_images`](super::Processor::load_images)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

impl Message {
    /// A text-only message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            images: Vec::new(),
        }
    }

    /// Adds an image path to this message.
    pub fn with_image(mut self, path: impl Into<String>) -> Self {
        self.images.push(path.into());
        self
    }
}

/// Python's `str.isspace`: Unicode `White_Space` plus the ASCII separators U+001C..U+001F, which
/// Python strips and Rust's `trim` keeps.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument, as the template strips contents.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Applies the `deepseek` template, exactly as
/// `VLChatProcessor.apply_sft_template_for_multi_turn_prompts`.
///
/// The system prompt (if non-empty) is followed by `"\n\n"`; each message becomes
/// `role + ": " + content.strip() + sep`, where `sep` is `"\n\n"` after even-indexed and the EOS
/// text after odd-indexed messages; a message whose stripped content is empty becomes just
/// `role + ":"` (the generation cue). The result is stripped.
pub fn apply_sft_template(
    conversation: &[Message],
    system_prompt: &str,
) -> Result<String, ProcessorError> {
    if conversation.is_empty() {
        return Err(ProcessorError::EmptyConversation);
    }
    let mut out = String::new();
    if !system_prompt.is_empty() {
        out.push_str(system_prompt);
        out.push_str(SEP);
    }
    for (i, message) in conversation.iter().enumerate() {
        let content = py_strip(&message.content);
        out.push_str(&message.role);
        if content.is_empty() {
            out.push(':');
        } else {
            out.push_str(": ");
            out.push_str(content);
            out.push_str(if i % 2 == 0 { SEP } else { SEP2 });
        }
    }
    Ok(py_strip(&out).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_turn_understanding() {
        let conv = [
            Message::new("<|User|>", "<image_placeholder>\nQ?"),
            Message::new("<|Assistant|>", ""),
        ];
        let s = apply_sft_template(&conv, SYSTEM_PROMPT).unwrap();
        assert_eq!(
            s,
            format!("{SYSTEM_PROMPT}\n\n<|User|>: <image_placeholder>\nQ?\n\n<|Assistant|>:")
        );
    }

    #[test]
    fn multi_turn_alternates_separators() {
        let conv = [
            Message::new("User", "  Hello!\n"),
            Message::new("Assistant", "Hi."),
            Message::new("User", "Again"),
            Message::new("Assistant", ""),
        ];
        let s = apply_sft_template(&conv, "").unwrap();
        assert_eq!(
            s,
            "User: Hello!\n\nAssistant: Hi.<｜end▁of▁sentence｜>User: Again\n\nAssistant:"
        );
    }

    #[test]
    fn trailing_separator_is_stripped() {
        let conv = [Message::new("User", "x")];
        assert_eq!(apply_sft_template(&conv, "").unwrap(), "User: x");
    }

    #[test]
    fn empty_conversation_is_an_error() {
        assert!(matches!(
            apply_sft_template(&[], SYSTEM_PROMPT),
            Err(ProcessorError::EmptyConversation)
        ));
    }

    #[test]
    fn user_turn_puts_one_placeholder_line_per_image_first() {
        let roles = ChatRoles::janus_1_3b();
        let m = roles.user_turn("Q?", 2, "<image_placeholder>");
        assert_eq!(m.role, "User");
        assert_eq!(m.content, "<image_placeholder>\n<image_placeholder>\nQ?");
        assert_eq!(
            ChatRoles::janus_pro().user_turn("Q?", 0, "<p>").content,
            "Q?"
        );
        assert_eq!(roles.assistant_cue(), Message::new("Assistant", ""));
    }

    #[test]
    fn strip_matches_python() {
        assert_eq!(py_strip("\u{1f}\u{a0} a b \u{3000}\n"), "a b");
    }
}
