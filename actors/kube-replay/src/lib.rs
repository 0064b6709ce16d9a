//! Test support for the Kubernetes clients (the scheduler's `kubernetes`
//! executor and the provisioner's `kubernetes` provider): a kube [`Client`]
//! over a `tower-test` mock service that replays recorded API-server
//! exchanges in order, checking each request against the recording.

#![warn(missing_docs)]

use kube::Client;
use serde_json::Value;

/// One request the client must make and the API server's recorded answer.
pub struct Exchange {
    /// The HTTP method.
    pub method: &'static str,
    /// The URI path.
    pub path: String,
    /// Fragments the query must hold (`watch=true`, a selector).
    pub query: Vec<String>,
    /// Whether the query must not hold `watch=true`.
    pub not_watch: bool,
    /// The JSON body the request must carry, when it matters.
    pub request: Option<Value>,
    /// The answer's status.
    pub status: u16,
    /// The answer's body.
    pub body: Vec<u8>,
}

/// An exchange answering `body` (JSON) with `status`.
pub fn exchange(
    method: &'static str,
    path: &str,
    query: Vec<&str>,
    status: u16,
    body: Value,
) -> Exchange {
    Exchange {
        method,
        path: path.into(),
        not_watch: !query.contains(&"watch=true"),
        query: query.into_iter().map(str::to_string).collect(),
        request: None,
        status,
        body: serde_json::to_vec(&body).unwrap(),
    }
}

impl Exchange {
    /// Requires the request's body to be `request` (JSON).
    pub fn expecting(mut self, request: Value) -> Self {
        self.request = Some(request);
        self
    }
}

/// A `kind` list (`NodeList`, `PodList`...) holding `items`.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    serde_json::json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "11"}, "items": items})
}

/// The API server's `Status` answer for an error `code`.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "code": code, "reason": reason, "message": message})
}

/// A kube client whose API server answers `script` in order, checking
/// each request; the task ends with the requests it saw (`METHOD path?query`).
pub fn replaying(script: Vec<Exchange>) -> (Client, tokio::task::JoinHandle<Vec<String>>) {
    use http::{Request, Response};
    use kube::client::Body;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for expected in script {
            let (request, send) = handle.next_request().await.expect("a request");
            let query = request.uri().query().unwrap_or_default().to_string();
            let line = format!("{} {}?{query}", request.method(), request.uri().path());
            assert_eq!(request.method().as_str(), expected.method, "{line}");
            assert_eq!(request.uri().path(), expected.path, "{line}");
            for fragment in &expected.query {
                assert!(query.contains(fragment), "{line} lacks {fragment}");
            }
            if expected.not_watch {
                assert!(!query.contains("watch=true"), "{line} watches");
            }
            if let Some(want) = &expected.request {
                let bytes = request.into_body().collect_bytes().await.expect("a body");
                let got: Value = serde_json::from_slice(&bytes).expect("a JSON body");
                assert_eq!(&got, want, "{line} body");
            }
            let response = Response::builder()
                .status(expected.status)
                .body(Body::from(expected.body))
                .unwrap();
            send.send_response(response);
            seen.push(line);
        }
        seen
    });
    (client, task)
}

/// A kube client and the recorded API server it talks to, for a test that
/// makes several clients over the same recording (as after a restart).
pub struct Replay {
    client: Client,
    server: tokio::task::JoinHandle<Vec<String>>,
}

impl Replay {
    /// A recorded API server answering `script` in order (see [`replaying`]).
    pub fn new(script: Vec<Exchange>) -> Self {
        let (client, server) = replaying(script);
        Replay { client, server }
    }

    /// A client of the recorded server.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Waits until every recorded exchange was made, in order, and returns
    /// the requests seen. Callers drop their clients first: a request still
    /// missing then fails at once rather than after the wait.
    pub async fn finish(self) -> Vec<String> {
        drop(self.client);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(20), self.server);
        let followed = waited.await.expect("the recorded exchanges were made");
        followed.expect("the requests follow the recording")
    }
}
