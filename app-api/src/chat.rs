//! Chat providers. `local` (the offline default) is a prompt-craft assistant: it reads the user's
//! message, names what a strong generation prompt needs that the message lacks (subject, light,
//! lens or camera, mood), suggests a style stack from those the user may use, and drafts a prompt.
//! `openai` speaks the OpenAI-compatible chat completions API (`CHAT_BASE_URL`,
//! `OPENROUTER_API_KEY`) with streaming, so OpenRouter or any compatible server works. Both stream
//! their answer as text deltas.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// One message of a conversation.
#[derive(Debug, Clone)]
pub struct Turn {
    /// `system | user | assistant`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// What the local assistant knows about the user (names only; already filtered by the PDP).
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Style stacks the user may use: (name, description).
    pub styles: Vec<(String, String)>,
    /// Names of projects the user may view, most recent first.
    pub projects: Vec<String>,
}

/// The OpenAI-compatible provider.
#[derive(Clone)]
pub struct RemoteChat {
    /// e.g. `https://openrouter.ai/api/v1`.
    pub base_url: String,
    /// Bearer key.
    pub key: SecretString,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Models offered.
    pub models: Vec<String>,
}

impl std::fmt::Debug for RemoteChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteChat")
            .field("base_url", &self.base_url)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// Which chat provider answers.
#[derive(Debug, Clone)]
pub enum ChatProvider {
    /// Offline prompt-craft assistant.
    Local,
    /// OpenAI-compatible endpoint.
    Remote(RemoteChat),
}

/// The system prompt every conversation starts with.
pub const SYSTEM_PROMPT: &str = "You are Velro's prompt-craft assistant. Help the user write prompts for image and video generation models: be concrete about subject, composition, light, lens and mood, and keep answers short.";

/// The local assistant's model id.
pub const LOCAL_MODEL: &str = "velro/local-prompt-assistant";

impl ChatProvider {
    /// The model ids this provider offers.
    pub fn models(&self) -> Vec<String> {
        match self {
            Self::Local => vec![LOCAL_MODEL.to_owned()],
            Self::Remote(remote) => remote.models.clone(),
        }
    }

    /// The model used when a session names none.
    pub fn default_model(&self) -> String {
        self.models()
            .into_iter()
            .next()
            .unwrap_or_else(|| LOCAL_MODEL.to_owned())
    }

    /// Stream the assistant's answer to `history` (which ends with the user's message).
    pub async fn complete(
        &self,
        model: &str,
        history: &[Turn],
        context: &Context,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<String>>> {
        match self {
            Self::Local => {
                let last = history
                    .iter()
                    .rev()
                    .find(|t| t.role == "user")
                    .map(|t| t.content.as_str())
                    .unwrap_or_default();
                let answer = local_answer(last, context);
                // Word-sized deltas, like a remote model streams.
                let words: Vec<String> = answer.split_inclusive(' ').map(str::to_owned).collect();
                Ok(futures::stream::iter(words.into_iter().map(Ok)).boxed())
            }
            Self::Remote(remote) => remote.stream(model, history).await,
        }
    }
}

const LIGHT: [&str; 10] = [
    "light", "lit", "sun", "golden", "neon", "shadow", "dusk", "dawn", "night", "glow",
];
const CAMERA: [&str; 9] = [
    "lens", "mm", "shot", "close-up", "wide", "angle", "camera", "aerial", "macro",
];
const MOOD: [&str; 8] = [
    "mood",
    "moody",
    "calm",
    "dramatic",
    "melanchol",
    "joyful",
    "eerie",
    "serene",
];

fn mentions(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// The offline assistant's answer: deterministic, built from the message and the user's context.
pub fn local_answer(message: &str, context: &Context) -> String {
    let text = message.to_lowercase();
    let subject = message.trim().trim_end_matches(['.', '?', '!']);
    let mut missing = Vec::new();
    if !mentions(&text, &LIGHT) {
        missing.push("the light (e.g. golden hour, neon, overcast)");
    }
    if !mentions(&text, &CAMERA) {
        missing.push("the camera (e.g. 35mm close-up, wide aerial shot)");
    }
    if !mentions(&text, &MOOD) {
        missing.push("the mood (e.g. serene, dramatic, eerie)");
    }
    let mut answer = String::new();
    if subject.is_empty() {
        answer.push_str("Tell me what you want to see and I will help you shape the prompt.");
        return answer;
    }
    if missing.is_empty() {
        answer.push_str("Your prompt already sets subject, light, camera and mood. ");
    } else {
        answer.push_str("To make this a stronger prompt, add ");
        answer.push_str(&missing.join(", "));
        answer.push_str(". ");
    }
    // A style whose name or description shares a word with the message, else the first one.
    let style = context
        .styles
        .iter()
        .find(|(name, description)| {
            let haystack = format!("{name} {description}").to_lowercase();
            text.split_whitespace()
                .filter(|w| w.len() > 3)
                .any(|w| haystack.contains(w))
        })
        .or_else(|| context.styles.first());
    if let Some((name, _)) = style {
        answer.push_str(&format!("The \"{name}\" style stack would suit it. "));
    }
    if let Some(project) = context.projects.first() {
        answer.push_str(&format!(
            "If it belongs with your project \"{project}\", keep its palette consistent. "
        ));
    }
    answer.push_str("Draft: \"");
    answer.push_str(subject);
    if missing.iter().any(|m| m.starts_with("the light")) {
        answer.push_str(", soft golden hour light");
    }
    if missing.iter().any(|m| m.starts_with("the camera")) {
        answer.push_str(", 35mm lens, shallow depth of field");
    }
    if missing.iter().any(|m| m.starts_with("the mood")) {
        answer.push_str(", calm cinematic mood");
    }
    answer.push_str("\".");
    answer
}

/// Prompt ideas for the suggestions endpoint, from the user's projects and styles.
pub fn suggestions(context: &Context) -> Vec<String> {
    let mut ideas = Vec::new();
    for project in context.projects.iter().take(3) {
        ideas.push(format!(
            "A key visual for \"{project}\": hero subject centred, soft rim light, 50mm lens"
        ));
    }
    for (style, _) in context.styles.iter().take(3) {
        ideas.push(format!("Try the \"{style}\" style on a portrait at dusk"));
    }
    if ideas.is_empty() {
        ideas.push("A lighthouse on a cliff at golden hour, 35mm, calm mood".into());
    }
    ideas
}

impl RemoteChat {
    async fn stream(
        &self,
        model: &str,
        history: &[Turn],
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<String>>> {
        let messages: Vec<Value> = history
            .iter()
            .map(|t| json!({ "role": t.role, "content": t.content }))
            .collect();
        let response = self
            .http
            .post(format!(
                "{}/chat/completions",
                self.base_url.trim_end_matches('/')
            ))
            .bearer_auth(self.key.expose_secret())
            .json(&json!({ "model": model, "messages": messages, "stream": true }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "the chat provider refused: HTTP {}",
            response.status()
        );
        // Server-sent events: `data: {json}` lines, `data: [DONE]` at the end.
        let mut buffer = String::new();
        let mut body = response.bytes_stream();
        let stream = async_stream(move |emit| async move {
            while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), body.next())
                .await
                .map_err(|_| anyhow::anyhow!("the chat provider stalled"))?
            {
                buffer.push_str(&String::from_utf8_lossy(&chunk?));
                anyhow::ensure!(
                    buffer.len() <= 1024 * 1024,
                    "an oversize event from the chat provider"
                );
                while let Some(end) = buffer.find('\n') {
                    let line: String = buffer.drain(..=end).collect();
                    let Some(data) = line.trim().strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim();
                    if data == "[DONE]" {
                        return Ok(());
                    }
                    let event: Value = serde_json::from_str(data)
                        .map_err(|_| anyhow::anyhow!("a malformed event from the chat provider"))?;
                    if let Some(delta) = event["choices"][0]["delta"]["content"].as_str()
                        && !delta.is_empty()
                    {
                        emit.send(delta.to_owned()).await;
                    }
                }
            }
            Ok(())
        });
        Ok(stream)
    }
}

/// A stream fed by an async producer through a bounded channel.
fn async_stream<F, Fut>(producer: F) -> BoxStream<'static, anyhow::Result<String>>
where
    F: FnOnce(Emitter) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<anyhow::Result<String>>(32);
    let emitter = Emitter { tx: tx.clone() };
    tokio::spawn(async move {
        if let Err(e) = producer(emitter).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Sends deltas into an `async_stream`.
#[derive(Debug, Clone)]
pub struct Emitter {
    tx: tokio::sync::mpsc::Sender<anyhow::Result<String>>,
}

impl Emitter {
    /// Send one delta (dropped if the reader went away).
    pub async fn send(&self, delta: String) {
        let _ = self.tx.send(Ok(delta)).await;
    }
}
