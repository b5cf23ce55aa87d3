//! Generation providers and the job runner. `local` (the offline default) renders real media from
//! the prompt, deterministically: a PNG for image models, an animated PNG for video models, with
//! progress reported in steps; `fal` (with `FAL_KEY`) runs the model on FAL's queue API. The
//! runner moves a generation through pending → processing → completed, storing the output under
//! the media store (`storage`), or to failed with a refund.

pub mod fal;

use std::time::Duration;

use uuid::Uuid;

use crate::models::{self, Output};
use crate::repo::Repo;
use crate::storage::MediaStore;

/// What a provider produced.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// File bytes.
    pub bytes: Vec<u8>,
    /// MIME type.
    pub content_type: &'static str,
    /// File extension.
    pub extension: &'static str,
}

/// A job for a provider.
#[derive(Debug, Clone)]
pub struct Job {
    /// The generation.
    pub id: Uuid,
    /// Its creator.
    pub owner: Uuid,
    /// Model id.
    pub model_id: String,
    /// Prompt.
    pub prompt: String,
    /// Negative prompt ("" for none).
    pub negative_prompt: String,
    /// Validated parameters.
    pub parameters: serde_json::Value,
}

/// Which provider renders generations.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Offline, deterministic, real media.
    Local(LocalProvider),
    /// FAL's queue API.
    Fal(fal::FalProvider),
}

impl Provider {
    /// Its name, for health and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Fal(_) => "fal",
        }
    }

    /// Render `job`, reporting progress.
    pub async fn render(
        &self,
        job: &Job,
        progress: impl FnMut(i64) -> futures::future::BoxFuture<'static, ()>,
    ) -> anyhow::Result<Rendered> {
        match self {
            Self::Local(local) => local.render(job, progress).await,
            Self::Fal(fal) => fal.render(job, progress).await,
        }
    }
}

/// The offline provider.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    /// Pause between progress steps (realistic pacing; tests shorten it).
    pub step: Duration,
}

/// Steps of a local render (progress moves by 100 / STEPS).
const STEPS: i64 = 8;

fn seed_of(job: &Job) -> u64 {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}\n{}\n{}", job.model_id, job.prompt, job.parameters).as_bytes(),
    );
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(seed)
}

/// A small deterministic generator (xorshift64*), enough for shapes and colours.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn dimensions(aspect: &str, long_side: u32) -> (u32, u32) {
    let (w, h) = aspect
        .split_once(':')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| *w > 0 && *h > 0)
        .unwrap_or((1, 1));
    if w >= h {
        (long_side, (long_side * h / w).max(1))
    } else {
        ((long_side * w / h).max(1), long_side)
    }
}

/// Colour words a prompt may use; the first two found set the gradient.
const PALETTE: &[(&str, [f32; 3])] = &[
    ("red", [200.0, 40.0, 40.0]),
    ("orange", [240.0, 140.0, 30.0]),
    ("golden", [230.0, 180.0, 60.0]),
    ("yellow", [240.0, 220.0, 60.0]),
    ("green", [60.0, 170.0, 80.0]),
    ("forest", [30.0, 90.0, 40.0]),
    ("blue", [40.0, 90.0, 210.0]),
    ("ocean", [20.0, 80.0, 140.0]),
    ("sky", [130.0, 190.0, 240.0]),
    ("purple", [130.0, 60.0, 170.0]),
    ("pink", [240.0, 130.0, 180.0]),
    ("neon", [255.0, 40.0, 200.0]),
    ("snow", [235.0, 240.0, 250.0]),
    ("white", [245.0, 245.0, 245.0]),
    ("night", [15.0, 20.0, 50.0]),
    ("noir", [20.0, 20.0, 20.0]),
    ("black", [10.0, 10.0, 10.0]),
    ("dusk", [120.0, 70.0, 110.0]),
    ("sunset", [250.0, 110.0, 60.0]),
];

/// The gradient colours a prompt asks for, if it names any.
fn prompt_colours(prompt: &str) -> Vec<[f32; 3]> {
    let prompt = prompt.to_lowercase();
    let mut found: Vec<(usize, [f32; 3])> = PALETTE
        .iter()
        .filter_map(|(word, rgb)| prompt.find(word).map(|at| (at, *rgb)))
        .collect();
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, rgb)| rgb).take(2).collect()
}

/// Draw one RGB frame: a two-colour gradient (from the prompt's colour words, else the seed) with
/// soft discs, shifted by `phase`.
fn frame(width: u32, height: u32, seed: u64, phase: f32, named: &[[f32; 3]]) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut colour = || {
        [
            rng.below(256) as f32,
            rng.below(256) as f32,
            rng.below(256) as f32,
        ]
    };
    let (mut a, mut b) = (colour(), colour());
    if let Some(first) = named.first() {
        a = *first;
    }
    if let Some(second) = named.get(1) {
        b = *second;
    }
    let discs: Vec<(f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            (
                rng.below(u64::from(width)) as f32,
                rng.below(u64::from(height)) as f32,
                (rng.below(u64::from(width.min(height) / 3)) + 8) as f32,
                [
                    rng.below(256) as f32,
                    rng.below(256) as f32,
                    rng.below(256) as f32,
                ],
            )
        })
        .collect();
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let t = ((x + y) as f32 / (width + height) as f32 + phase).fract();
            let mut px = [0f32; 3];
            for c in 0..3 {
                px[c] = a[c] * (1.0 - t) + b[c] * t;
            }
            for (i, (cx, cy, r, col)) in discs.iter().enumerate() {
                let dx = x as f32 - (cx + phase * 40.0 * (i as f32 - 2.5));
                let dy = y as f32 - cy;
                let d = (dx * dx + dy * dy).sqrt();
                if d < *r {
                    let k = 1.0 - d / r;
                    for c in 0..3 {
                        px[c] = px[c] * (1.0 - k * 0.8) + col[c] * k * 0.8;
                    }
                }
            }
            pixels.extend(px.iter().map(|v| v.clamp(0.0, 255.0) as u8));
        }
    }
    pixels
}

/// Encode frames as PNG (one frame) or animated PNG (several), 8 fps.
fn encode(width: u32, height: u32, frames: &[Vec<u8>]) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if frames.len() > 1 {
            encoder.set_animated(u32::try_from(frames.len()).unwrap_or(1), 0)?;
            encoder.set_frame_delay(1, 8)?;
        }
        let mut writer = encoder.write_header()?;
        for pixels in frames {
            writer.write_image_data(pixels)?;
        }
        writer.finish()?;
    }
    Ok(out)
}

impl LocalProvider {
    /// Render `job`, calling `progress` after each step.
    pub async fn render(
        &self,
        job: &Job,
        mut progress: impl FnMut(i64) -> futures::future::BoxFuture<'static, ()>,
    ) -> anyhow::Result<Rendered> {
        let model = models::find(&job.model_id)
            .ok_or_else(|| anyhow::anyhow!("unknown model {}", job.model_id))?;
        let aspect = job.parameters["aspect_ratio"]
            .as_str()
            .unwrap_or("1:1")
            .to_owned();
        for step in 1..STEPS {
            tokio::time::sleep(self.step).await;
            progress(step * 100 / STEPS).await;
        }
        let seed = seed_of(job);
        let output = model.output;
        let named = prompt_colours(&job.prompt);
        tokio::task::spawn_blocking(move || {
            let (frames, (w, h)) = match output {
                Output::Image => {
                    let (w, h) = dimensions(&aspect, 512);
                    (vec![frame(w, h, seed, 0.0, &named)], (w, h))
                }
                Output::Video => {
                    let (w, h) = dimensions(&aspect, 256);
                    let frames = (0..12)
                        .map(|i| frame(w, h, seed, i as f32 / 12.0, &named))
                        .collect();
                    (frames, (w, h))
                }
            };
            let bytes = encode(w, h, &frames)?;
            Ok(match output {
                Output::Image => Rendered {
                    bytes,
                    content_type: "image/png",
                    extension: "png",
                },
                Output::Video => Rendered {
                    bytes,
                    content_type: "image/apng",
                    extension: "png",
                },
            })
        })
        .await?
    }
}

/// Runs generation jobs in the background.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The provider.
    pub provider: Provider,
    /// Where outputs go.
    pub media: MediaStore,
    /// The database.
    pub repo: Repo,
}

impl Runner {
    /// Start `job` in the background.
    pub fn spawn(&self, job: Job) {
        let runner = self.clone();
        tokio::spawn(async move {
            let id = job.id;
            if let Err(e) = runner.run(job).await {
                tracing::warn!(generation = %id, error = %e, "generation failed");
                match runner.repo.fail_generation(id, "the provider failed").await {
                    Ok(_) => {
                        let _ = runner.repo.wrote().await;
                    }
                    Err(e) => {
                        tracing::error!(generation = %id, error = %e, "could not record a failure; it is refunded on the next start")
                    }
                }
            }
        });
    }

    async fn run(&self, job: Job) -> anyhow::Result<()> {
        if !self.repo.set_progress(job.id, "processing", 0).await? {
            return Ok(()); // deleted or finished meanwhile
        }
        let repo = self.repo.clone();
        let id = job.id;
        let rendered = self
            .provider
            .render(&job, move |p| {
                let repo = repo.clone();
                Box::pin(async move {
                    if let Err(e) = repo.set_progress(id, "processing", p).await {
                        tracing::warn!(generation = %id, error = %e, "progress not recorded");
                    }
                })
            })
            .await?;
        let key = self.media.put(job.id, &rendered).await?;
        let completed = self
            .repo
            .complete_generation(
                job.id,
                job.owner,
                &key,
                rendered.content_type,
                &rendered.bytes,
            )
            .await;
        match completed {
            Ok(true) => {
                // The status change matters to media decisions: later requests must see it.
                self.repo.wrote().await?;
                Ok(())
            }
            Ok(false) => {
                self.media.remove(&[key]).await;
                Ok(())
            }
            Err(e) => {
                self.media.remove(&[key]).await;
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(model: &str, aspect: &str) -> Job {
        Job {
            id: Uuid::now_v7(),
            owner: Uuid::now_v7(),
            model_id: model.into(),
            prompt: "a lighthouse at dusk".into(),
            negative_prompt: String::new(),
            parameters: json!({ "aspect_ratio": aspect }),
        }
    }

    #[tokio::test]
    async fn images_are_real_deterministic_pngs() {
        let provider = LocalProvider {
            step: Duration::ZERO,
        };
        let mut seen = Vec::new();
        let a = provider
            .render(&job("flux-pro/v1.1-ultra", "16:9"), |p| {
                seen.push(p);
                Box::pin(async {})
            })
            .await
            .unwrap();
        assert_eq!(&a.bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(a.content_type, "image/png");
        assert!(seen.windows(2).all(|w| w[0] < w[1]) && !seen.is_empty());
        let decoder = png::Decoder::new(std::io::Cursor::new(a.bytes.clone()));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (512, 288));
        let b = provider
            .render(&job("flux-pro/v1.1-ultra", "16:9"), |_| Box::pin(async {}))
            .await
            .unwrap();
        assert_eq!(a.bytes, b.bytes, "same prompt and parameters, same image");
    }

    #[tokio::test]
    async fn videos_are_animated() {
        let provider = LocalProvider {
            step: Duration::ZERO,
        };
        let v = provider
            .render(&job("veo3", "16:9"), |_| Box::pin(async {}))
            .await
            .unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(v.bytes));
        let reader = decoder.read_info().unwrap();
        assert_eq!(reader.info().animation_control().unwrap().num_frames, 12);
    }

    #[test]
    fn colour_words_in_the_prompt_pick_the_palette() {
        assert_eq!(prompt_colours("a red fox in snow").len(), 2);
        assert_eq!(prompt_colours("a red fox in snow")[0], [200.0, 40.0, 40.0]);
        assert!(prompt_colours("a fox").is_empty());
    }
}
