//! The FAL queue API client (`FAL_KEY`): submit to `POST {base}/{model_id}` with
//! `Authorization: Key …`, poll the returned `status_url` until `COMPLETED`, read the result from
//! `response_url`, download the first image or video it names, and check what arrived by its magic
//! bytes. The key is only ever sent to the configured base URL: status and result URLs that point
//! elsewhere are replaced by the documented `{base}/{model}/requests/{id}[/status]` paths.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Job, Rendered};
use crate::media_types::sniff;

/// Largest output accepted, bytes.
const MAX_OUTPUT_BYTES: usize = 512 * 1024 * 1024;

/// FAL settings.
#[derive(Clone)]
pub struct FalProvider {
    /// `https://queue.fal.run` in production.
    pub base_url: String,
    /// The API key.
    pub key: SecretString,
    /// Pause between status polls.
    pub poll: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// HTTP client (timeouts set).
    pub http: reqwest::Client,
}

impl std::fmt::Debug for FalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FalProvider")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Submitted {
    request_id: String,
    #[serde(default)]
    status_url: Option<String>,
    #[serde(default)]
    response_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Status {
    status: String,
    #[serde(default)]
    queue_position: Option<i64>,
}

/// The first media URL of a FAL result: `images[0].url`, `image.url` or `video.url`.
fn output_url(result: &Value) -> Option<&str> {
    result["images"][0]["url"]
        .as_str()
        .or_else(|| result["image"]["url"].as_str())
        .or_else(|| result["video"]["url"].as_str())
}

impl FalProvider {
    fn same_origin(&self, url: &str) -> bool {
        url.starts_with(&format!("{}/", self.base_url.trim_end_matches('/')))
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header("authorization", format!("Key {}", self.key.expose_secret()))
    }

    /// Run `job` on FAL, calling `progress` while it waits.
    pub async fn render(
        &self,
        job: &Job,
        mut progress: impl FnMut(i64) -> futures::future::BoxFuture<'static, ()>,
    ) -> anyhow::Result<Rendered> {
        let base = self.base_url.trim_end_matches('/');
        let mut input = Map::new();
        input.insert("prompt".into(), Value::from(job.prompt.clone()));
        if !job.negative_prompt.is_empty() {
            input.insert(
                "negative_prompt".into(),
                Value::from(job.negative_prompt.clone()),
            );
        }
        if let Value::Object(parameters) = &job.parameters {
            for (k, v) in parameters {
                input.insert(k.clone(), v.clone());
            }
        }
        let response = self
            .request(reqwest::Method::POST, &format!("{base}/{}", job.model_id))
            .json(&Value::Object(input))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "FAL refused the request: HTTP {}",
            response.status()
        );
        let submitted: Submitted = response.json().await?;
        anyhow::ensure!(
            !submitted.request_id.is_empty()
                && submitted
                    .request_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "FAL returned a malformed request id"
        );
        // Status and result live under the app id (the first two segments of the model id).
        let app: Vec<&str> = job.model_id.split('/').take(2).collect();
        let app = app.join("/");
        let fallback = format!("{base}/{app}/requests/{}", submitted.request_id);
        let status_url = submitted
            .status_url
            .filter(|u| self.same_origin(u))
            .unwrap_or_else(|| format!("{fallback}/status"));
        let response_url = submitted
            .response_url
            .filter(|u| self.same_origin(u))
            .unwrap_or(fallback);

        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut reported = 0;
        loop {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "FAL did not finish in time"
            );
            let response = self
                .request(reqwest::Method::GET, &status_url)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "FAL status failed: HTTP {}",
                response.status()
            );
            let status: Status = response.json().await?;
            match status.status.as_str() {
                "COMPLETED" => break,
                "IN_QUEUE" => {
                    tracing::debug!(position = ?status.queue_position, "FAL request queued");
                }
                "IN_PROGRESS" => {
                    reported = (reported + 10).clamp(10, 90);
                    progress(reported).await;
                }
                other => anyhow::bail!("FAL reported an unknown status `{other}`"),
            }
            tokio::time::sleep(self.poll).await;
        }
        let response = self
            .request(reqwest::Method::GET, &response_url)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "the FAL generation failed: HTTP {}",
            response.status()
        );
        let result: Value = response.json().await?;
        let url = output_url(&result)
            .ok_or_else(|| anyhow::anyhow!("the FAL result names no media"))?
            .to_owned();
        anyhow::ensure!(
            url.starts_with("https://") || url.starts_with("http://"),
            "the FAL result's media URL is not HTTP"
        );
        progress(95).await;
        // Media URLs are public CDN links: no key.
        let mut media = self.http.get(&url).send().await?;
        anyhow::ensure!(
            media.status().is_success(),
            "downloading the output failed: HTTP {}",
            media.status()
        );
        let mut bytes = Vec::new();
        while let Some(chunk) = media.chunk().await? {
            anyhow::ensure!(
                bytes.len() + chunk.len() <= MAX_OUTPUT_BYTES,
                "the output is larger than {MAX_OUTPUT_BYTES} bytes"
            );
            bytes.extend_from_slice(&chunk);
        }
        let (content_type, extension) =
            sniff(&bytes).ok_or_else(|| anyhow::anyhow!("the output is not an image or video"))?;
        Ok(Rendered {
            bytes,
            content_type,
            extension,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_shapes_are_understood() {
        let images = serde_json::json!({ "images": [{ "url": "https://cdn/x.png" }] });
        assert_eq!(output_url(&images), Some("https://cdn/x.png"));
        let video = serde_json::json!({ "video": { "url": "https://cdn/v.mp4" } });
        assert_eq!(output_url(&video), Some("https://cdn/v.mp4"));
        assert_eq!(output_url(&serde_json::json!({})), None);
    }
}
