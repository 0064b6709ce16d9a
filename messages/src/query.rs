//! The body of a state query (`<prefix>.query.<actor>.<id>`): which page of
//! a long list the reply should hold.
//!
//! Most aggregates answer their whole state and ignore the page. A queue
//! pages its jobs: `{"after": "t17", "limit": 100}` answers at most 100
//! jobs whose ids sort after `t17`, and the reply's `next` is the id to ask
//! `after` for the following page (absent on the last one). An empty body
//! or `{}` is the first page of [`DEFAULT_PAGE_LIMIT`] items.

use crate::error::Rejection;
use serde::{Deserialize, Serialize};

/// Items in a page when the query names no limit.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// The most items one page may hold.
pub const MAX_PAGE_LIMIT: usize = 1_000;

/// Which part of a long list a query answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Answer only items whose key sorts after this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many items, 1..=[`MAX_PAGE_LIMIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
}

impl Page {
    /// Reads a query body (JSON; empty means the first page), refusing
    /// unknown fields and a limit out of range, naming the field.
    pub fn parse(body: &[u8]) -> Result<Self, Rejection> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Page::default());
        }
        let page: Page =
            serde_json::from_slice(body).map_err(|e| Rejection::invalid(format!("query: {e}")))?;
        page.validate()?;
        Ok(page)
    }

    /// Checks the limit.
    pub fn validate(&self) -> Result<(), Rejection> {
        match self.limit {
            Some(n) if !(1..=MAX_PAGE_LIMIT).contains(&n) => Err(Rejection::invalid(format!(
                "limit must be between 1 and {MAX_PAGE_LIMIT}, got {n}"
            ))),
            _ => Ok(()),
        }
    }

    /// The number of items to answer.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn an_empty_body_is_the_first_page_and_bad_ones_name_the_field() {
        assert_eq!(Page::parse(b"").unwrap(), Page::default());
        assert_eq!(Page::parse(b"{}").unwrap().limit(), DEFAULT_PAGE_LIMIT);
        let page = Page::parse(br#"{"after": "t1", "limit": 5}"#).unwrap();
        assert_eq!((page.after.as_deref(), page.limit()), (Some("t1"), 5));
        for (body, field) in [
            (&br#"{"limit": 0}"#[..], "limit"),
            (br#"{"limit": 1001}"#, "limit"),
            (br#"{"size": 3}"#, "size"),
            (br#"[1]"#, "query"),
        ] {
            let e = Page::parse(body).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField);
            assert!(e.message.contains(field), "{}", e.message);
        }
    }
}
