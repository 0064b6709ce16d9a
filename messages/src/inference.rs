//! The inference worker's wire contract: CarlaRL Policy-as-a-Service bodies
//! and errors, plus the commands and events of a worker's model versions.
//!
//! A client of CarlaRL must be able to switch to Flotilla without changing a
//! line, so the shapes here are CarlaRL's:
//!
//! - [`PredictRequest`] is read from a JSON (or MessagePack) value by
//!   [`parse_predict`], which checks what CarlaRL's pydantic model checks and
//!   reports every problem as a [`FieldError`] named like pydantic does
//!   (`body.observations.0.speed`, type `greater_than_equal`);
//! - [`PredictResponse`] and [`Action`] are the answer (`timingMs`, camelCase);
//! - [`ServingError`] carries one of CarlaRL's codes ([`ServingErrorCode`]) and
//!   renders the body `{error, message, details: {request_id, ..}, timestamp}`.
//!
//! The same bodies travel over HTTP (`flotilla-gateway`'s inference routes)
//! and over NATS on `<prefix>.infer.<model>`. The worker itself (batching,
//! candle, artifacts) lives in `flotilla-inference`; the
//! version commands and events ([`InferenceCommand`], [`InferenceEvent`]) are
//! decided by its `ModelDeployment` aggregate.

use crate::codec::Encoding;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// At most this many observations in one request.
pub const MAX_OBSERVATIONS: usize = 1000;
/// At most this many sensor readings in one observation.
pub const MAX_SENSORS: usize = 10_000;
/// Speed is accepted in `0..=200`.
pub const SPEED_RANGE: (f64, f64) = (0.0, 200.0);
/// Steering is accepted in `-1..=1`.
pub const STEERING_RANGE: (f64, f64) = (-1.0, 1.0);
/// Sensor readings are accepted within `±1000`.
pub const SENSOR_BOUND: f64 = 1000.0;

/// One observation of the car.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Observation {
    /// Speed, `0..=200`.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 200))]
    pub speed: f32,
    /// Steering angle, `-1..=1`.
    #[cfg_attr(feature = "openapi", schema(minimum = -1, maximum = 1))]
    pub steering: f32,
    /// Sensor readings, 1 to 10,000 values within `±1000`.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Vec<SensorReading>, min_items = 1, max_items = 10000)
    )]
    pub sensors: Vec<f32>,
}

/// One sensor reading of an [`Observation`], within `±1000` (the
/// document's item schema; the worker keeps readings as `f32`).
#[cfg(feature = "openapi")]
pub struct SensorReading;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for SensorReading {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(-SENSOR_BOUND))
            .maximum(Some(SENSOR_BOUND))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for SensorReading {}

/// A validated `POST /predict` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PredictRequest {
    /// 1 to 1000 observations.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub observations: Vec<Observation>,
    /// `true`: the policy's mean action; `false` (CarlaRL's default): a
    /// sample around it.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<bool>, required = false, default = false)
    )]
    pub deterministic: bool,
    /// Seed of the sample (an extension; CarlaRL has none). Without it the
    /// worker draws one from its own seeded sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// One action, clipped to the action space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Action {
    /// `0..=1`.
    pub throttle: f32,
    /// `0..=1`.
    pub brake: f32,
    /// `-1..=1`.
    pub steer: f32,
}

/// The answer to `POST /predict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PredictResponse {
    /// One action per observation, in order.
    pub actions: Vec<Action>,
    /// The model version that answered.
    pub version: String,
    /// Time spent in the worker, in milliseconds.
    pub timing_ms: f64,
    /// Whether the actions are the policy's mean.
    pub deterministic: bool,
}

/// One problem with a request body, as pydantic reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Where, e.g. `body.observations.0.speed`.
    pub field: String,
    /// What is wrong, for people.
    pub message: String,
    /// What is wrong, for programs: `missing`, `too_short`, `float_parsing`…
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    fn new(field: impl Into<String>, kind: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
            kind: kind.to_string(),
        }
    }
}

/// CarlaRL's error codes, plus the two an HTTP layer needs that CarlaRL
/// leaves to its framework (an oversized body, an unknown host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ServingErrorCode {
    /// The body is malformed or a field is out of range (422).
    ValidationError,
    /// The observations could not be turned into features (422).
    PreprocessingError,
    /// An artifact's sha256 does not match its model card (422).
    ArtifactValidationError,
    /// The forward pass failed (500).
    InferenceError,
    /// A model could not be loaded (500).
    ModelLoadingError,
    /// No model is serving yet, or the worker is shutting down (503).
    ServiceUnavailable,
    /// The batching queue is full (429).
    ResourceExhausted,
    /// A bug (500).
    InternalError,
    /// The body is larger than the worker accepts (413).
    PayloadTooLarge,
    /// The `Host` header is not in `ALLOWED_HOSTS` (400).
    InvalidHost,
    /// No such route or version (404).
    NotFound,
    /// The route exists but not with this method (405).
    MethodNotAllowed,
    /// A version route's body is not JSON (415): a browser's simple request.
    UnsupportedMediaType,
    /// A version route's `Origin` is not the worker's own nor in `CORS_ORIGINS` (403).
    ForbiddenOrigin,
    /// No bearer token, or an unknown one (401).
    Unauthenticated,
    /// The token's role lacks the route's permission (403; `details.missing_permission`).
    Forbidden,
    /// The principal is over its role's rate limit (429, with `Retry-After`).
    RateLimited,
}

impl ServingErrorCode {
    /// The wire spelling, e.g. `VALIDATION_ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationError => "VALIDATION_ERROR",
            Self::PreprocessingError => "PREPROCESSING_ERROR",
            Self::ArtifactValidationError => "ARTIFACT_VALIDATION_ERROR",
            Self::InferenceError => "INFERENCE_ERROR",
            Self::ModelLoadingError => "MODEL_LOADING_ERROR",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::InternalError => "INTERNAL_ERROR",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::InvalidHost => "INVALID_HOST",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::ForbiddenOrigin => "FORBIDDEN_ORIGIN",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::RateLimited => "RATE_LIMITED",
        }
    }

    /// The HTTP status CarlaRL answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::ValidationError | Self::PreprocessingError | Self::ArtifactValidationError => 422,
            Self::InferenceError | Self::ModelLoadingError | Self::InternalError => 500,
            Self::ServiceUnavailable => 503,
            Self::ResourceExhausted => 429,
            Self::PayloadTooLarge => 413,
            Self::InvalidHost => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UnsupportedMediaType => 415,
            Self::ForbiddenOrigin | Self::Forbidden => 403,
            Self::Unauthenticated => 401,
            Self::RateLimited => 429,
        }
    }
}

/// A typed serving error: code, message and details (without the request
/// id and timestamp, which the transport adds when it renders the body).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ServingError {
    /// The code.
    pub code: ServingErrorCode,
    /// For people.
    pub message: String,
    /// Extra facts (`validation_errors`, `model_loaded`, …).
    pub details: Map<String, Value>,
}

impl ServingError {
    /// An error without details.
    pub fn new(code: ServingErrorCode, message: impl Into<String>) -> Self {
        ServingError {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds one detail.
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// CarlaRL's 422 for a body that failed validation.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let errors = serde_json::to_value(errors).unwrap_or_default();
        Self::new(ServingErrorCode::ValidationError, "Input validation failed")
            .with_detail("validation_errors", errors)
    }

    /// CarlaRL's 503 when no model is serving.
    pub fn no_model() -> Self {
        Self::new(
            ServingErrorCode::ServiceUnavailable,
            "Model not loaded: the service is degraded",
        )
        .with_detail("model_loaded", false)
    }

    /// The body `{error, message, details: {.., request_id}, timestamp}`;
    /// `timestamp` is seconds since the epoch, as CarlaRL writes it.
    pub fn body(&self, request_id: &str, timestamp: f64) -> Value {
        let mut details = self.details.clone();
        details.insert("request_id".into(), Value::String(request_id.to_string()));
        json!({
            "error": self.code.as_str(),
            "message": self.message,
            "details": details,
            "timestamp": timestamp,
        })
    }
}

/// Seconds since the Unix epoch, as CarlaRL's `timestamp` fields carry it.
pub fn unix_timestamp() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Decodes and validates a `/predict` body in `encoding`.
pub fn decode_predict(encoding: Encoding, body: &[u8]) -> Result<PredictRequest, ServingError> {
    let value: Value = match encoding {
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            let offset = if e.is_eof() {
                body.len()
            } else {
                byte_offset(body, e.line(), e.column())
            };
            ServingError::validation(vec![FieldError::new(
                format!("body.{offset}"),
                "json_invalid",
                format!("JSON decode error: {e}"),
            )])
        })?,
        Encoding::MsgPack => rmp_serde::from_slice(body).map_err(|e| {
            ServingError::validation(vec![FieldError::new(
                "body",
                "msgpack_invalid",
                format!("MessagePack decode error: {e}"),
            )])
        })?,
    };
    parse_predict(&value).map_err(ServingError::validation)
}

/// Where serde_json's 1-based line/column points, as a byte offset (the
/// position FastAPI names in `body.<pos>`).
fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let start: usize = body
        .split(|b| *b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    start + column.saturating_sub(1)
}

/// Validates a `/predict` body given as a value; every problem is reported.
pub fn parse_predict(value: &Value) -> Result<PredictRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Value::Object(body) = value else {
        return Err(vec![FieldError::new(
            "body",
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        )]);
    };
    let observations = match body.get("observations") {
        None => {
            errors.push(missing("body.observations"));
            Vec::new()
        }
        Some(v) => observations(v, &mut errors),
    };
    let deterministic = match body.get("deterministic") {
        None | Some(Value::Null) => Some(false),
        Some(v) => lax_bool(v, "body.deterministic", &mut errors),
    };
    let seed = match body.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(s) => Some(s),
            None => {
                errors.push(FieldError::new(
                    "body.seed",
                    "int_type",
                    "Input should be a non-negative integer",
                ));
                None
            }
        },
    };
    match deterministic {
        Some(deterministic) if errors.is_empty() => Ok(PredictRequest {
            observations,
            deterministic,
            seed,
        }),
        _ => Err(errors),
    }
}

fn missing(field: &str) -> FieldError {
    FieldError::new(field, "missing", "Field required")
}

fn observations(value: &Value, errors: &mut Vec<FieldError>) -> Vec<Observation> {
    let Value::Array(items) = value else {
        errors.push(FieldError::new(
            "body.observations",
            "list_type",
            "Input should be a valid list",
        ));
        return Vec::new();
    };
    if let Some(e) = length_error("body.observations", items.len(), 1, MAX_OBSERVATIONS) {
        errors.push(e);
        return Vec::new();
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| observation(item, &format!("body.observations.{i}"), errors))
        .collect()
}

fn length_error(field: &str, len: usize, min: usize, max: usize) -> Option<FieldError> {
    if len < min {
        let plural = if min == 1 { "item" } else { "items" };
        return Some(FieldError::new(
            field,
            "too_short",
            format!("List should have at least {min} {plural} after validation, not {len}"),
        ));
    }
    (len > max).then(|| {
        FieldError::new(
            field,
            "too_long",
            format!("List should have at most {max} items after validation, not {len}"),
        )
    })
}

fn observation(value: &Value, at: &str, errors: &mut Vec<FieldError>) -> Option<Observation> {
    let Value::Object(fields) = value else {
        errors.push(FieldError::new(
            at,
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        ));
        return None;
    };
    let before = errors.len();
    let speed = bounded(
        fields.get("speed"),
        &format!("{at}.speed"),
        SPEED_RANGE,
        errors,
    );
    let steering = bounded(
        fields.get("steering"),
        &format!("{at}.steering"),
        STEERING_RANGE,
        errors,
    );
    let sensors = sensors(fields.get("sensors"), &format!("{at}.sensors"), errors);
    (errors.len() == before).then(|| Observation {
        speed: speed.unwrap_or_default() as f32,
        steering: steering.unwrap_or_default() as f32,
        sensors: sensors.unwrap_or_default(),
    })
}

/// A float as pydantic reads it in lax mode: a number, or a string holding one.
fn lax_float(value: &Value, field: &str, errors: &mut Vec<FieldError>) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(x) => Some(x),
            Err(_) => {
                errors.push(FieldError::new(
                    field,
                    "float_parsing",
                    "Input should be a valid number, unable to parse string as a number",
                ));
                None
            }
        },
        _ => {
            errors.push(FieldError::new(
                field,
                "float_type",
                "Input should be a valid number",
            ));
            None
        }
    }
}

fn bounded(
    value: Option<&Value>,
    field: &str,
    (low, high): (f64, f64),
    errors: &mut Vec<FieldError>,
) -> Option<f64> {
    let Some(value) = value else {
        errors.push(missing(field));
        return None;
    };
    let x = lax_float(value, field, errors)?;
    let problem = if !x.is_finite() {
        Some((
            "finite_number",
            "Input should be a finite number".to_string(),
        ))
    } else if x < low {
        Some((
            "greater_than_equal",
            format!("Input should be greater than or equal to {}", number(low)),
        ))
    } else if x > high {
        Some((
            "less_than_equal",
            format!("Input should be less than or equal to {}", number(high)),
        ))
    } else {
        None
    };
    match problem {
        Some((kind, message)) => {
            errors.push(FieldError::new(field, kind, message));
            None
        }
        None => Some(x),
    }
}

/// `0` rather than `0.0`, as Python prints an int bound.
fn number(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn sensors(value: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<Vec<f32>> {
    let Some(value) = value else {
        errors.push(missing(field));
        return None;
    };
    let Value::Array(items) = value else {
        errors.push(FieldError::new(
            field,
            "list_type",
            "Input should be a valid list",
        ));
        return None;
    };
    if let Some(e) = length_error(field, items.len(), 1, MAX_SENSORS) {
        errors.push(e);
        return None;
    }
    let before = errors.len();
    let values: Vec<f64> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| lax_float(item, &format!("{field}.{i}"), errors))
        .collect();
    if errors.len() > before {
        return None;
    }
    if values
        .iter()
        .any(|x| !x.is_finite() || x.abs() > SENSOR_BOUND)
    {
        errors.push(FieldError::new(
            field,
            "value_error",
            format!(
                "Value error, sensor values must be finite and within [-{b}, {b}]",
                b = number(SENSOR_BOUND)
            ),
        ));
        return None;
    }
    Some(values.into_iter().map(|x| x as f32).collect())
}

/// A bool as pydantic reads it in lax mode.
fn lax_bool(value: &Value, field: &str, errors: &mut Vec<FieldError>) -> Option<bool> {
    let parsed = match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    if parsed.is_none() {
        errors.push(FieldError::new(
            field,
            "bool_parsing",
            "Input should be a valid boolean, unable to interpret input",
        ));
    }
    parsed
}

/// The command types of the inference actor.
pub const COMMAND_TYPES: &[&str] = &[
    "load_version",
    "record_load",
    "activate_version",
    "roll_back",
];

/// What an operator (or the worker itself) asks of a worker's model versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InferenceCommand {
    /// Load, verify and warm up a version from the artifact folder.
    LoadVersion {
        /// A folder name such as `v0.2.0`.
        version: String,
    },
    /// The outcome of a load (sent by the worker's effect handler).
    RecordLoad {
        /// The version.
        version: String,
        /// What happened.
        outcome: LoadOutcome,
    },
    /// Route traffic to a loaded version.
    ActivateVersion {
        /// The version.
        version: String,
    },
    /// Route traffic back to the version active before the current one.
    RollBack {},
}

/// How a load ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadOutcome {
    /// Loaded, verified and warmed up.
    Loaded(LoadedVersion),
    /// Refused.
    Failed {
        /// A [`ServingErrorCode`] spelling.
        code: String,
        /// Why.
        message: String,
    },
}

/// What a loaded version is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoadedVersion {
    /// The card's `model_name`.
    pub model_name: String,
    /// Features the network takes (speed, steering and the sensors).
    pub input_size: usize,
    /// Layer widths, input first.
    pub layer_sizes: Vec<usize>,
    /// The verified sha256 of every artifact.
    pub artifact_hashes: BTreeMap<String, String>,
    /// How long the warm-up took, in milliseconds.
    pub warmup_ms: f64,
}

/// What happened to a worker's model versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InferenceEvent {
    /// A load was asked for (the worker loads it after this is stored).
    LoadRequested {
        /// The version.
        version: String,
    },
    /// The version is loaded and warm.
    VersionLoaded {
        /// The version.
        version: String,
        /// What it is.
        loaded: LoadedVersion,
    },
    /// The version could not be loaded.
    LoadFailed {
        /// The version.
        version: String,
        /// A [`ServingErrorCode`] spelling.
        code: String,
        /// Why.
        message: String,
    },
    /// Traffic goes to `version` from now on.
    VersionActivated {
        /// The version.
        version: String,
        /// The version that served before, if any.
        previous: Option<String>,
    },
    /// Traffic went back from `from` to `to`.
    RolledBack {
        /// The version that served.
        from: String,
        /// The version that serves again.
        to: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(v: Value) -> Result<PredictRequest, Vec<FieldError>> {
        parse_predict(&v)
    }

    #[test]
    fn a_valid_body_parses_with_carla_defaults() {
        let r = body(json!({"observations": [{"speed": 25.5, "steering": 0.1,
            "sensors": [0.8, "0.2", 0.5]}], "extra": 1}))
        .unwrap();
        assert!(!r.deterministic);
        assert_eq!(r.observations[0].sensors, vec![0.8, 0.2, 0.5]);
    }

    #[test]
    fn errors_name_the_field_like_pydantic() {
        let e = body(json!({"observations": [{"speed": -1, "steering": 0, "sensors": [1]}]}))
            .unwrap_err();
        assert_eq!(e[0].field, "body.observations.0.speed");
        assert_eq!(e[0].kind, "greater_than_equal");
        assert_eq!(e[0].message, "Input should be greater than or equal to 0");
        let e = body(json!({"observations": []})).unwrap_err();
        assert_eq!(e[0].kind, "too_short");
        let many: Vec<Value> = (0..1001)
            .map(|_| json!({"speed": 1, "steering": 0, "sensors": [1]}))
            .collect();
        assert_eq!(
            body(json!({ "observations": many })).unwrap_err()[0].kind,
            "too_long"
        );
        let e = body(json!({"observations": [{"speed": 1, "sensors": [2000]}]})).unwrap_err();
        let kinds: Vec<&str> = e.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["missing", "value_error"]);
        let e = body(
            json!({"observations": [{"speed": 1, "steering": 0, "sensors": [1]}],
            "deterministic": "maybe"}),
        )
        .unwrap_err();
        assert_eq!(e[0].kind, "bool_parsing");
    }

    #[test]
    fn malformed_json_names_the_position() {
        let e = decode_predict(Encoding::Json, b"{\"observations\": [").unwrap_err();
        assert_eq!(e.code, ServingErrorCode::ValidationError);
        let first = &e.details["validation_errors"][0];
        assert_eq!(first["type"], "json_invalid");
        assert_eq!(first["field"], "body.18");
    }

    #[test]
    fn nan_sensors_over_msgpack_are_refused() {
        let v = rmp_serde::to_vec_named(&json!({"observations": [
            {"speed": 1.0, "steering": 0.0, "sensors": [f64::NAN]}]}))
        .unwrap();
        let e = decode_predict(Encoding::MsgPack, &v).unwrap_err();
        let first = &e.details["validation_errors"][0];
        assert_eq!(first["field"], "body.observations.0.sensors.0");
        assert_eq!(e.code.http_status(), 422);
    }

    #[test]
    fn error_body_carries_the_request_id() {
        let b = ServingError::no_model().body("abc", 1.5);
        assert_eq!(b["error"], "SERVICE_UNAVAILABLE");
        assert_eq!(b["details"]["request_id"], "abc");
        assert_eq!(b["details"]["model_loaded"], false);
    }

    #[test]
    fn commands_round_trip() {
        let c: InferenceCommand =
            serde_json::from_value(json!({"type": "load_version", "version": "v1.0.0"})).unwrap();
        assert_eq!(
            c,
            InferenceCommand::LoadVersion {
                version: "v1.0.0".into()
            }
        );
        let c: InferenceCommand = serde_json::from_value(json!({"type": "roll_back"})).unwrap();
        assert_eq!(c, InferenceCommand::RollBack {});
    }

    proptest! {
        #[test]
        fn garbage_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_predict(Encoding::Json, &bytes);
            let _ = decode_predict(Encoding::MsgPack, &bytes);
        }

        #[test]
        fn in_range_observations_always_parse(speed in 0.0f64..=200.0, steering in -1.0f64..=1.0,
            sensors in proptest::collection::vec(-1000.0f64..=1000.0, 1..20)) {
            let r = body(json!({"observations": [{"speed": speed, "steering": steering,
                "sensors": sensors}], "deterministic": true}));
            prop_assert!(r.is_ok());
        }
    }
}
