//! End-to-end: the real `flotilla worker` describes itself as CarlaRL's
//! FastAPI server does — `/openapi.json` (OpenAPI 3.1), Swagger UI at
//! `/docs` and ReDoc at `/redoc` from the worker's own vendored assets —
//! and schemathesis (`SCHEMATHESIS_BIN`, installed by scripts/test) finds
//! every answer of a live worker conforming to that document.

use crate::support::api_docs::{assert_document_and_viewers, schemathesis};
use crate::support::inference::{model_init, Worker};

#[test]
fn the_document_and_its_viewers_are_served_from_the_worker_itself() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let worker = Worker::start(dir.path(), &[], &[]);
    let doc = assert_document_and_viewers(&worker.url);
    assert!(doc["paths"]["/predict"]["post"].is_object());
}

/// schemathesis 4 against a live worker with a model, every check on.
///
/// One check is left out, `negative_data_rejection`: the worker validates
/// `/predict` as CarlaRL's pydantic model does in lax mode, so it accepts
/// numbers written as strings (`"speed": "12.5"`) and `"yes"`/`1` as
/// booleans, which no JSON Schema with the real bounds can state; a
/// document that allowed strings would in turn fail
/// `positive_data_acceptance` on strings that are not numbers.
///
/// One answer is declared expected: `POST /versions/rollback` with nothing
/// served before answers 422 `VALIDATION_ERROR` (a state, not the request,
/// is wrong; the route has no body to be invalid), so for that operation
/// alone `positive_data_acceptance` accepts 422 (`schemathesis.toml`).
#[test]
fn schemathesis_finds_every_answer_conforming() {
    let dir = tempfile::tempdir().unwrap();
    model_init(dir.path(), "v0.1.0", 0);
    let worker = Worker::start(dir.path(), &[], &[]);
    let work = tempfile::tempdir().unwrap();
    schemathesis(
        &worker.url,
        CONFIG,
        &["negative_data_rejection"],
        &["--max-examples", "20"],
        work.path(),
    );
    let (status, _) = worker.get("/healthz");
    assert_eq!(status, 200, "the worker still serves:\n{}", worker.log());
}

/// Rollback with no earlier version answers 422: expected, see the test.
const CONFIG: &str = r#"[[operations]]
include-path = "/versions/rollback"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422"]
"#;
