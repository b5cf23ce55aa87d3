//! Style stacks: reusable prompt styles in three tiers (`basic | enhanced | signature`), a built-in
//! library seeded on start, and `apply` — prompt and model in, adapted prompt out — with
//! per-model (and per-output) adaptations and the model's prompt-length limit.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::extract::text;
use crate::models::{Model, Output};

/// Tiers, from plain to elaborate.
pub const TIERS: [&str; 3] = ["basic", "enhanced", "signature"];

/// What a style stack does to a prompt.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Put before the prompt.
    #[serde(default)]
    pub prefix: String,
    /// Put after the prompt.
    #[serde(default)]
    pub suffix: String,
    /// Negative prompt added to the caller's.
    #[serde(default)]
    pub negative: String,
    /// Extra for image models.
    #[serde(default)]
    pub image: String,
    /// Extra for video models.
    #[serde(default)]
    pub video: String,
    /// Extra for one model, by model id (e.g. `fal-ai/veo3`).
    #[serde(default)]
    pub models: std::collections::BTreeMap<String, String>,
}

impl Definition {
    /// Parse and bound a definition given by a client.
    pub fn parse(value: &Value) -> ApiResult<Self> {
        let definition: Self = serde_json::from_value(value.clone())
            .map_err(|e| ApiError::validation("definition", format!("invalid definition: {e}")))?;
        for (field, value) in [
            ("prefix", &definition.prefix),
            ("suffix", &definition.suffix),
            ("negative", &definition.negative),
            ("image", &definition.image),
            ("video", &definition.video),
        ] {
            text("definition", value, 500, false).map_err(|_| {
                ApiError::validation(
                    "definition",
                    format!("{field}: at most 500 characters, no control characters"),
                )
            })?;
        }
        if definition.models.len() > 20 {
            return Err(ApiError::validation(
                "definition",
                "at most 20 model adaptations",
            ));
        }
        for (model, extra) in &definition.models {
            if crate::models::find(model).is_none() {
                return Err(ApiError::validation(
                    "definition",
                    "adaptation for an unknown model",
                ));
            }
            text("definition", extra, 500, false)?;
        }
        Ok(definition)
    }
}

/// The result of applying a style.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Applied {
    /// The adapted prompt.
    pub prompt: String,
    /// The combined negative prompt.
    pub negative_prompt: String,
    /// Whether the prompt was cut to the model's limit.
    pub truncated: bool,
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cut `text` to at most `max` characters, at a word boundary when one is near.
fn cut(text: &str, max: usize) -> (String, bool) {
    if text.chars().count() <= max {
        return (text.to_owned(), false);
    }
    let cut: String = text.chars().take(max).collect();
    let at = cut
        .rfind([' ', ','])
        .filter(|at| *at > max / 2)
        .unwrap_or(cut.len());
    (cut[..at].trim_end_matches([' ', ',']).to_owned(), true)
}

/// Apply `definition` to `prompt` for `model`. The caller's prompt is never dropped: the style's
/// additions are cut first, then the whole, to the model's limit.
pub fn apply(definition: &Definition, prompt: &str, negative: &str, model: &Model) -> Applied {
    let output_extra = match model.output {
        Output::Image => definition.image.as_str(),
        Output::Video => definition.video.as_str(),
    };
    let model_extra = definition
        .models
        .get(model.id)
        .map(String::as_str)
        .unwrap_or_default();
    let full = join(&[
        &definition.prefix,
        prompt,
        &definition.suffix,
        output_extra,
        model_extra,
    ]);
    let (prompt, truncated) = if full.chars().count() <= model.max_prompt_chars {
        (full, false)
    } else {
        let core = join(&[&definition.prefix, prompt]);
        if core.chars().count() <= model.max_prompt_chars {
            let (styled, _) = cut(&full, model.max_prompt_chars);
            (styled, true)
        } else {
            cut(&core, model.max_prompt_chars)
        }
    };
    Applied {
        prompt,
        negative_prompt: join(&[negative, &definition.negative]),
        truncated,
    }
}

/// A built-in style.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Fixed id.
    pub id: &'static str,
    /// Name.
    pub name: &'static str,
    /// One line.
    pub description: &'static str,
    /// Tier.
    pub tier: &'static str,
    /// Prefix, suffix, negative, image extra, video extra.
    pub parts: [&'static str; 5],
}

impl Builtin {
    /// Its definition.
    pub fn definition(&self) -> Definition {
        let [prefix, suffix, negative, image, video] = self.parts;
        Definition {
            prefix: prefix.into(),
            suffix: suffix.into(),
            negative: negative.into(),
            image: image.into(),
            video: video.into(),
            models: Default::default(),
        }
    }
}

/// The built-in library (ids are fixed so references survive restarts).
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        id: "00000000-0000-7000-8000-000000000001",
        name: "Golden hour",
        description: "Warm low sun, long shadows, soft haze",
        tier: "basic",
        parts: [
            "golden hour light",
            "warm tones, long soft shadows, gentle haze",
            "harsh midday light, flat lighting",
            "natural colour grading",
            "slow drifting camera",
        ],
    },
    Builtin {
        id: "00000000-0000-7000-8000-000000000002",
        name: "Film noir",
        description: "High-contrast black and white, venetian-blind shadows",
        tier: "basic",
        parts: [
            "film noir still",
            "high-contrast black and white, hard key light, venetian blind shadows, rain-slick streets",
            "colour, pastel, cheerful",
            "35mm grain",
            "static tripod shot, slow push-in",
        ],
    },
    Builtin {
        id: "00000000-0000-7000-8000-000000000003",
        name: "Studio product",
        description: "Clean product photography on a seamless backdrop",
        tier: "basic",
        parts: [
            "professional studio product photograph",
            "seamless backdrop, softbox lighting, crisp reflections",
            "clutter, text, watermark",
            "85mm lens, f/8",
            "turntable rotation",
        ],
    },
    Builtin {
        id: "00000000-0000-7000-8000-000000000004",
        name: "Watercolour",
        description: "Loose washes on textured paper",
        tier: "enhanced",
        parts: [
            "delicate watercolour painting of",
            "loose washes, bleeding pigments, visible cold-press paper texture",
            "photorealistic, 3d render",
            "white paper margins",
            "paint blooming frame by frame",
        ],
    },
    Builtin {
        id: "00000000-0000-7000-8000-000000000005",
        name: "Cyberpunk neon",
        description: "Night city, neon signage, wet reflections",
        tier: "enhanced",
        parts: [
            "cyberpunk night scene",
            "neon magenta and cyan signage, wet reflective asphalt, volumetric fog",
            "daylight, rural",
            "anamorphic lens flare",
            "handheld tracking shot through the crowd",
        ],
    },
    Builtin {
        id: "00000000-0000-7000-8000-000000000006",
        name: "Wes Anderson symmetry",
        description: "Centred symmetry, pastel palette, storybook framing",
        tier: "signature",
        parts: [
            "perfectly symmetrical centred composition",
            "pastel palette, storybook production design, deadpan framing",
            "asymmetry, handheld, gritty",
            "flat frontal perspective",
            "whip pans between static tableaux",
        ],
    },
    Builtin {
        id: "00000000-0000-7000-8000-000000000007",
        name: "Kubrick one-point",
        description: "One-point perspective corridors, cold precision",
        tier: "signature",
        parts: [
            "one-point perspective shot",
            "cold clinical precision, strong vanishing point, practical lighting",
            "dutch angle, clutter",
            "wide-angle 18mm lens",
            "slow steadicam glide down the corridor",
        ],
    },
    Builtin {
        id: "00000000-0000-7000-8000-000000000008",
        name: "Wong Kar-wai longing",
        description: "Saturated neon melancholy, step-printed motion",
        tier: "signature",
        parts: [
            "moody saturated frame",
            "smeared neon, cigarette smoke, longing, shallow focus through glass",
            "sharp clinical lighting",
            "expired film stock colours",
            "step-printed slow shutter motion blur",
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::find;

    #[test]
    fn apply_adapts_per_output_and_model() {
        let noir = BUILTINS[1].definition();
        let image = apply(
            &noir,
            "a detective in an alley",
            "blurry",
            find("flux-pro/v1.1-ultra").unwrap(),
        );
        assert!(
            image
                .prompt
                .starts_with("film noir still, a detective in an alley, high-contrast")
        );
        assert!(image.prompt.ends_with("35mm grain"));
        assert_eq!(image.negative_prompt, "blurry, colour, pastel, cheerful");
        assert!(!image.truncated);
        let video = apply(&noir, "a detective in an alley", "", find("veo3").unwrap());
        assert!(video.prompt.ends_with("slow push-in"));

        let mut custom = Definition::default();
        custom
            .models
            .insert("fal-ai/veo3".into(), "with ambient city sound".into());
        let veo = apply(&custom, "rain", "", find("veo3").unwrap());
        assert_eq!(veo.prompt, "rain, with ambient city sound");
    }

    #[test]
    fn long_prompts_keep_the_callers_words_first() {
        let model = find("imagen4/preview/ultra").unwrap();
        let style = BUILTINS[0].definition();
        let long = "word ".repeat(500);
        let applied = apply(&style, &long, "", model);
        assert!(applied.truncated);
        assert!(applied.prompt.chars().count() <= model.max_prompt_chars);
        assert!(applied.prompt.starts_with("golden hour light, word word"));
    }

    #[test]
    fn definitions_are_bounded() {
        assert!(Definition::parse(&serde_json::json!({ "prefix": "x" })).is_ok());
        assert!(Definition::parse(&serde_json::json!({ "prefix": "x".repeat(501) })).is_err());
        assert!(Definition::parse(&serde_json::json!({ "script": "rm -rf /" })).is_err());
        assert!(Definition::parse(&serde_json::json!({ "models": { "nope": "x" } })).is_err());
    }

    #[test]
    fn the_library_covers_every_tier() {
        for tier in TIERS {
            assert!(BUILTINS.iter().any(|b| b.tier == tier), "{tier}");
        }
        for b in BUILTINS {
            assert!(velro_engine::ids::parse_uuid(b.id).is_ok(), "{}", b.id);
        }
    }
}
