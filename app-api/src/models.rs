//! The public model registry: which generation models exist, what they cost and which parameters
//! each accepts. Parameters are validated here, per model, before any credit moves; unknown
//! parameters are refused rather than passed on to a provider.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// What a model produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// A still image (PNG from the local provider).
    Image,
    /// A video (an animated PNG from the local provider).
    Video,
}

/// One parameter's rule.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Param {
    /// One of a fixed set of strings.
    Choice {
        /// Allowed values.
        values: &'static [&'static str],
        /// Default.
        default: &'static str,
    },
    /// An integer in a range.
    Integer {
        /// Smallest.
        min: i64,
        /// Largest.
        max: i64,
        /// Default.
        default: i64,
    },
    /// A boolean.
    Boolean {
        /// Default.
        default: bool,
    },
}

/// A model.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// Id as clients name it (the provider's id).
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// What it produces.
    pub output: Output,
    /// Credits per generation (2000 credits = 1 USD).
    pub cost: i64,
    /// Longest prompt, characters.
    pub max_prompt_chars: usize,
    /// Accepted parameters.
    pub parameters: &'static [(&'static str, Param)],
}

const ASPECT: Param = Param::Choice {
    values: &["1:1", "16:9", "9:16", "4:3", "3:4", "21:9"],
    default: "1:1",
};
const SEED: Param = Param::Integer {
    min: 0,
    max: 2_147_483_647,
    default: 0,
};
const NUM_IMAGES: Param = Param::Integer {
    min: 1,
    max: 4,
    default: 1,
};

/// Every model, in display order.
pub const MODELS: &[Model] = &[
    Model {
        id: "fal-ai/flux-pro/v1.1-ultra",
        name: "FLUX1.1 [pro] ultra",
        output: Output::Image,
        cost: 50,
        max_prompt_chars: 2000,
        parameters: &[
            ("aspect_ratio", ASPECT),
            ("seed", SEED),
            ("num_images", NUM_IMAGES),
            ("raw", Param::Boolean { default: false }),
            (
                "safety_tolerance",
                Param::Integer {
                    min: 1,
                    max: 6,
                    default: 2,
                },
            ),
        ],
    },
    Model {
        id: "fal-ai/flux-pro/kontext/max",
        name: "FLUX.1 Kontext [max]",
        output: Output::Image,
        cost: 60,
        max_prompt_chars: 2000,
        parameters: &[
            ("aspect_ratio", ASPECT),
            ("seed", SEED),
            ("num_images", NUM_IMAGES),
            (
                "guidance_scale",
                Param::Integer {
                    min: 1,
                    max: 20,
                    default: 4,
                },
            ),
        ],
    },
    Model {
        id: "fal-ai/imagen4/preview/ultra",
        name: "Imagen 4 Ultra",
        output: Output::Image,
        cost: 45,
        max_prompt_chars: 2000,
        parameters: &[("aspect_ratio", ASPECT), ("seed", SEED)],
    },
    Model {
        id: "fal-ai/veo3",
        name: "Veo 3",
        output: Output::Video,
        cost: 500,
        max_prompt_chars: 1500,
        parameters: &[
            (
                "aspect_ratio",
                Param::Choice {
                    values: &["16:9", "9:16", "1:1"],
                    default: "16:9",
                },
            ),
            (
                "duration",
                Param::Choice {
                    values: &["8s"],
                    default: "8s",
                },
            ),
            ("generate_audio", Param::Boolean { default: true }),
            ("seed", SEED),
        ],
    },
    Model {
        id: "fal-ai/minimax/hailuo-02/pro/text-to-video",
        name: "MiniMax Hailuo-02 Pro",
        output: Output::Video,
        cost: 400,
        max_prompt_chars: 1500,
        parameters: &[
            (
                "duration",
                Param::Choice {
                    values: &["6"],
                    default: "6",
                },
            ),
            ("prompt_optimizer", Param::Boolean { default: true }),
        ],
    },
    Model {
        id: "fal-ai/kling-video/v2.1/master/text-to-video",
        name: "Kling 2.1 Master",
        output: Output::Video,
        cost: 350,
        max_prompt_chars: 2500,
        parameters: &[
            (
                "aspect_ratio",
                Param::Choice {
                    values: &["16:9", "9:16", "1:1"],
                    default: "16:9",
                },
            ),
            (
                "duration",
                Param::Choice {
                    values: &["5", "10"],
                    default: "5",
                },
            ),
            (
                "cfg_scale",
                Param::Integer {
                    min: 0,
                    max: 1,
                    default: 0,
                },
            ),
        ],
    },
    Model {
        id: "fal-ai/wan-pro/text-to-video",
        name: "Wan 2.1 Pro",
        output: Output::Video,
        cost: 300,
        max_prompt_chars: 2000,
        parameters: &[
            ("seed", SEED),
            ("enable_safety_checker", Param::Boolean { default: true }),
        ],
    },
];

/// Look up a model by id, also accepting the short ids of the original system (without the
/// `fal-ai/` prefix and the task suffix), e.g. `veo3` or `flux-pro/v1.1-ultra`.
pub fn find(id: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| {
        let short = m.id.trim_start_matches("fal-ai/");
        m.id == id || short == id || short.trim_end_matches("/text-to-video") == id
    })
}

impl Model {
    /// Validate `given` against this model's parameters and fill in defaults. Unknown names,
    /// wrong types and out-of-range values are refused with the parameter's name.
    pub fn validate(&self, given: Option<&Value>) -> ApiResult<Value> {
        let given = match given {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => {
                return Err(ApiError::validation(
                    "parameters",
                    "parameters must be an object",
                ));
            }
        };
        for name in given.keys() {
            if !self.parameters.iter().any(|(p, _)| p == name) {
                let shown: String = name.chars().take(40).collect();
                return Err(ApiError::validation(
                    "parameters",
                    format!("model {} has no parameter `{shown}`", self.id),
                ));
            }
        }
        let mut out = Map::new();
        for (name, rule) in self.parameters {
            let value = given.get(*name);
            let bad = |why: &str| {
                ApiError::validation("parameters", format!("parameter `{name}`: {why}"))
            };
            let checked = match (rule, value) {
                (Param::Choice { default, .. }, None) => Value::from(*default),
                (Param::Choice { values, .. }, Some(Value::String(s))) => {
                    if !values.contains(&s.as_str()) {
                        return Err(bad(&format!("must be one of {}", values.join(", "))));
                    }
                    Value::from(s.clone())
                }
                (Param::Integer { default, .. }, None) => Value::from(*default),
                (Param::Integer { min, max, .. }, Some(v)) => match v.as_i64() {
                    Some(n) if (*min..=*max).contains(&n) => Value::from(n),
                    _ => return Err(bad(&format!("must be an integer from {min} to {max}"))),
                },
                (Param::Boolean { default }, None) => Value::from(*default),
                (Param::Boolean { .. }, Some(Value::Bool(b))) => Value::from(*b),
                (Param::Choice { .. }, Some(_)) => return Err(bad("must be a string")),
                (Param::Boolean { .. }, Some(_)) => return Err(bad("must be true or false")),
            };
            out.insert((*name).to_owned(), checked);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_prices_are_listed() {
        let price = |id: &str| find(id).map(|m| m.cost);
        assert_eq!(price("flux-pro/v1.1-ultra"), Some(50));
        assert_eq!(price("flux-pro/kontext/max"), Some(60));
        assert_eq!(price("imagen4/preview/ultra"), Some(45));
        assert_eq!(price("veo3"), Some(500));
        assert_eq!(price("minimax/hailuo-02/pro"), Some(400));
        assert_eq!(price("kling-video/v2.1/master"), Some(350));
        assert_eq!(price("wan-pro"), Some(300));
        assert_eq!(price("fal-ai/veo3"), Some(500));
        assert_eq!(price("nope"), None);
    }

    #[test]
    fn parameters_are_validated_per_model() {
        let flux = find("flux-pro/v1.1-ultra").unwrap();
        let filled = flux.validate(None).unwrap();
        assert_eq!(filled["aspect_ratio"], "1:1");
        assert_eq!(filled["num_images"], 1);
        assert!(
            flux.validate(Some(&json!({"aspect_ratio": "16:9"})))
                .is_ok()
        );
        assert!(
            flux.validate(Some(&json!({"aspect_ratio": "2:1"})))
                .is_err()
        );
        assert!(flux.validate(Some(&json!({"num_images": 9}))).is_err());
        assert!(flux.validate(Some(&json!({"num_images": "2"}))).is_err());
        assert!(flux.validate(Some(&json!({"duration": "8s"}))).is_err());
        assert!(flux.validate(Some(&json!([1, 2]))).is_err());
        let veo = find("veo3").unwrap();
        assert!(
            veo.validate(Some(&json!({"generate_audio": false})))
                .is_ok()
        );
        assert!(veo.validate(Some(&json!({"generate_audio": 1}))).is_err());
    }
}
