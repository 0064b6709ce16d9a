//! End-to-end: the gateway of a real `flotilla up` describes its API —
//! `/openapi.json` (OpenAPI 3.1, generated from the wire types), Swagger UI
//! at `/docs` and ReDoc at `/redoc` from the vendored assets the worker
//! serves too — and schemathesis (`SCHEMATHESIS_BIN`, installed by
//! scripts/test) finds every answer of a live gateway with auth on, a
//! study and a queue conforming to that document, and none a 5xx.

use crate::http_auth::{call, tokens_file};
use crate::support::api_docs::{assert_document_and_viewers, schemathesis};
use crate::support::inference::header;
use crate::support::{http_client, FlotillaUp};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// `flotilla up` with a tokens file, holding study `s1`, queue `q1` and
/// the simulated pool `p1`.
fn up_with_data(dir: &Path) -> (FlotillaUp, BTreeMap<&'static str, String>) {
    let (file, tokens) = tokens_file(dir);
    // Rate limits are `rate_limit`'s subject; here they would only turn
    // schemathesis's requests into 429s before they reach a handler.
    let up = FlotillaUp::start(
        &[
            "--tokens",
            file.to_str().unwrap(),
            "--rate-limit",
            "operator=off",
        ],
        dir,
    );
    let operator = Some(tokens["operator"].as_str());
    let study = json!({"type": "create_study", "seed": 1, "budget": 10,
        "bounds": {"x": {"min": 0, "max": 1}}});
    let queue = json!({"type": "configure_queue", "concurrency": 1});
    let pool = json!({"type": "apply_pool", "now": 0,
        "config": {"name": "p1", "provider": "sim", "min_nodes": 1, "max_nodes": 2}});
    let data = [
        ("solver/s1", study),
        ("scheduler/q1", queue),
        ("provisioner/p1", pool),
    ];
    for (path, body) in data {
        let url = format!("{}/v1/cmd/{path}", up.url);
        let (status, reply, _) = call("POST", &url, operator, Some(&body));
        assert_eq!(status, 200, "{path}: {reply}");
    }
    (up, tokens)
}

#[test]
fn the_document_and_its_viewers_are_served_by_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (up, tokens) = up_with_data(dir.path());
    let doc = assert_document_and_viewers(&up.url);
    assert_eq!(doc["info"]["title"], "Flotilla gateway");
    for actor in [
        "solver",
        "scheduler",
        "provisioner",
        "inference",
        "study_run",
    ] {
        let command = &doc["paths"][format!("/v1/cmd/{actor}/{{id}}")]["post"];
        let body = &command["requestBody"]["content"];
        assert!(body["application/json"].is_object(), "{actor}");
        assert!(body["application/msgpack"].is_object(), "{actor}");
        // With a tokens file, the API needs a token and the probes do not.
        assert_eq!(command["security"], json!([{"bearer": []}]), "{actor}");
    }
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
    assert_eq!(
        doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]["application/x-ndjson"]
            ["schema"]["$ref"],
        "#/components/schemas/Envelope"
    );
    // The document is what the gateway answers: the study's state is a Reply.
    let (status, reply, _) = call(
        "GET",
        &format!("{}/v1/query/solver/s1", up.url),
        Some(&tokens["viewer"]),
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["stream"], "solver/s1");
}

/// The gateway's own refusals are replies of the document's shape, with
/// the documented status and code: another method (405 with `Allow`), a
/// body over the limit (413), a query string that does not parse (400)
/// and a path no route serves (404).
#[test]
fn the_gateways_own_refusals_are_documented_replies() {
    let dir = tempfile::tempdir().unwrap();
    let (up, tokens) = up_with_data(dir.path());
    let client = http_client();
    let operator = &tokens["operator"];
    let big = vec![b' '; 2 * 1024 * 1024];
    let requests = [
        (
            client.delete(format!("{}/v1/cmd/solver/s1", up.url)),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            client
                .post(format!("{}/v1/cmd/solver/s1", up.url))
                .header("Content-Type", "application/json")
                .body(big),
            413,
            "TOO_LARGE",
        ),
        (
            client.get(format!("{}/v1/events?from=x", up.url)),
            400,
            "INVALID_FIELD",
        ),
        (
            client.get(format!("{}/v1/nothing", up.url)),
            404,
            "NOT_FOUND",
        ),
    ];
    for (request, status, code) in requests {
        let r = request.bearer_auth(operator).send().unwrap();
        assert_eq!(r.status().as_u16(), status, "{code}");
        if status == 405 {
            assert_eq!(header(&r, "allow"), "POST");
        }
        assert!(
            header(&r, "content-type").starts_with("application/json"),
            "{code}"
        );
        let reply: Value = r.json().unwrap();
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["error"]["code"], code, "{reply}");
    }
}

/// schemathesis 4 against a live gateway with auth on (an operator's
/// token on every request), a study, a queue and a pool, every check on;
/// the state queries read those.
///
/// The operations of the `inference` actor are left out: `flotilla up`
/// hosts no inference actor (each `flotilla worker` hosts its own, on a
/// NATS bus), so they answer 503 `UNAVAILABLE` here by design; the worker's
/// own test runs schemathesis against a worker.
///
/// `follow` of `/v1/events` is fixed to `false` (`schemathesis.toml`):
/// with `true` the response is a stream that stays open for new events,
/// which schemathesis would wait on until its timeout.
///
/// Commands are refused for what no schema can say: a trial id the study
/// never handed out (422 `UNKNOWN_TRIAL`), a search space whose `min` is
/// above its `max`, a pool whose `min_nodes` exceed `max_nodes`, a job id
/// taken (400 `INVALID_FIELD` naming the field). So for the command
/// operations `positive_data_acceptance` also accepts 400 and 422 — the
/// reply is still checked against the document, and no 5xx is accepted.
///
/// For the same operations `negative_data_rejection` also accepts 200:
/// serde reads
/// the tag of a nested internally tagged enum (`status` of a job's `end`
/// or `outcome`, `type` of a pruner or an autoscaler, `executor` of a
/// handle) also as the variant's index (`"status": 0` is the first
/// variant), which serde's derive cannot turn off and the document does
/// not advertise.
#[test]
fn schemathesis_finds_every_answer_conforming() {
    let dir = tempfile::tempdir().unwrap();
    let (up, tokens) = up_with_data(dir.path());
    let work = tempfile::tempdir().unwrap();
    let bearer = format!("Authorization: Bearer {}", tokens["operator"]);
    schemathesis(
        &up.url,
        CONFIG,
        &[],
        &[
            "--max-examples",
            "10",
            "-H",
            &bearer,
            "--exclude-path-regex",
            "/inference",
        ],
        work.path(),
    );
    let (status, _) = up.get("/healthz");
    assert_eq!(status, 200, "the gateway still serves:\n{}", up.log());
}

/// The expected answers and fixed parameters the test's comment explains;
/// the state queries read the aggregates `up_with_data` made.
const CONFIG: &str = r#"[[operations]]
include-path-regex = "^/v1/cmd/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422", "429"]
checks.negative_data_rejection.expected-statuses = ["200", "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "429"]

[[operations]]
include-path = "/v1/events"
parameters = { "follow" = "false" }

[[operations]]
include-path = "/v1/query/solver/{id}"
parameters = { "id" = "s1" }

[[operations]]
include-path = "/v1/query/scheduler/{id}"
parameters = { "id" = "q1" }

[[operations]]
include-path = "/v1/query/provisioner/{id}"
parameters = { "id" = "p1" }
"#;
