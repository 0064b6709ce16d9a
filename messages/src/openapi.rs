//! OpenAPI schemas (`utoipa`, feature `openapi`) of the wire types whose
//! serde form is written by hand: a type read through a wire struct
//! (`#[serde(try_from = "...Wire")]`) is described by that struct
//! ([`schema_as_wire!`]), and the scalars with their own spellings
//! (durations, samplers, scales, error codes) by the schemas below. Every
//! other wire type derives `ToSchema` next to its serde attributes, so the
//! gateway's document is generated from the types it cannot drift from.

use crate::fleet::Seconds;
use crate::solver::{Sampler, Scale};
use crate::ErrorCode;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A string schema taking exactly `values`.
fn string_enum(values: impl IntoIterator<Item = &'static str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .description(Some(description))
        .into()
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        string_enum(
            ErrorCode::ALL.map(ErrorCode::as_str),
            "A stable error code; clients branch on it.",
        )
    }
}

impl utoipa::ToSchema for ErrorCode {}

impl utoipa::PartialSchema for Sampler {
    fn schema() -> RefOr<Schema> {
        string_enum(
            Sampler::ALL.map(Sampler::as_str),
            "How a study picks its points (read in any case).",
        )
    }
}

impl utoipa::ToSchema for Sampler {}

impl utoipa::PartialSchema for Scale {
    fn schema() -> RefOr<Schema> {
        string_enum(
            [Scale::Linear, Scale::Log, Scale::Periodic].map(Scale::as_str),
            "How a parameter's range is searched (read in any case).",
        )
    }
}

impl utoipa::ToSchema for Scale {}

/// The spelling `parse_seconds` reads: whole units, `90`, `30s`, `5m`, `1h30m`, `250ms`.
const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$|^[0-9]+$";

impl utoipa::PartialSchema for Seconds {
    fn schema() -> RefOr<Schema> {
        let seconds = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0));
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(DURATION_PATTERN));
        OneOfBuilder::new()
            .item(seconds)
            .item(text)
            .description(Some(
                "A length of time: seconds, or a string with units (`30s`, `5m`, `1h`, `1d`, `1500ms`).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Seconds {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scalar_spellings_read_back() {
        for s in Sampler::ALL {
            assert_eq!(Sampler::parse(s.as_str()), Some(s));
        }
        for s in [Scale::Linear, Scale::Log, Scale::Periodic] {
            assert_eq!(Scale::parse(s.as_str()), Some(s));
        }
    }
}
