//! Test support for the Kubernetes clients (the scheduler's `kubernetes`
//! executor and the provisioner's `kubernetes` provider): a kube [`Client`]
//! over a `tower-test` mock service that replays recorded API-server
//! exchanges, checking each request against the recording.
//!
//! [`replaying`] and [`Replay`] expect the requests in the recorded order
//! (one client doing one thing at a time). [`Cassette`] is for clients that
//! make requests concurrently (several Jobs at once, whose requests
//! interleave as they will): each request takes the first unused exchange
//! it matches, and an exchange may be [held](Exchange::held) (never
//! answered, as a watch on a Job that keeps running).

//!
//! [`rbac`] maps each request to the RBAC permission it needs and checks
//! Roles against those needs; [`record`] collects the requests a
//! component's tests make into its needs file.

#![warn(missing_docs)]

pub mod rbac;
pub mod record;

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
    /// JSON the request's body must contain (every field given, at any
    /// depth, equal; others may be there too), when it matters.
    pub containing: Option<Value>,
    /// Whether the request is never answered ([`Cassette`] only): it waits
    /// until the recorded server goes away.
    pub held: bool,
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
        containing: None,
        held: false,
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

    /// Requires the request's body to contain `part` (see
    /// [`Exchange::containing`]): the fields that tell one Job's request
    /// from another's when the rest is not known in advance.
    pub fn containing(mut self, part: Value) -> Self {
        self.containing = Some(part);
        self
    }

    /// Never answers the request (see [`Exchange::held`]).
    pub fn held(mut self) -> Self {
        self.held = true;
        self
    }

    /// Whether a request (`method`, `path`, `query`, JSON `body`) is this one.
    fn matches(&self, method: &str, path: &str, query: &str, body: Option<&Value>) -> bool {
        let body_fits = |want: &Option<Value>, exact: bool| match (want, body) {
            (None, _) => true,
            (Some(want), Some(got)) if exact => want == got,
            (Some(want), Some(got)) => contains(got, want),
            (Some(_), None) => false,
        };
        method == self.method
            && path == self.path
            && self.query.iter().all(|f| query.contains(f.as_str()))
            && !(self.not_watch && query.contains("watch=true"))
            && body_fits(&self.request, true)
            && body_fits(&self.containing, false)
    }
}

/// Whether `whole` holds every field of `part`, recursively.
fn contains(whole: &Value, part: &Value) -> bool {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p
            .iter()
            .all(|(k, v)| w.get(k).is_some_and(|got| contains(got, v))),
        _ => whole == part,
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
    let client = Client::new(service, rbac::HOME_NAMESPACE);
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
            if expected.request.is_some() || expected.containing.is_some() {
                let bytes = request.into_body().collect_bytes().await.expect("a body");
                let got: Value = serde_json::from_slice(&bytes).expect("a JSON body");
                if let Some(want) = &expected.request {
                    assert_eq!(&got, want, "{line} body");
                }
                if let Some(part) = &expected.containing {
                    assert!(contains(&got, part), "{line} body {got} lacks {part}");
                }
            }
            let response = Response::builder()
                .status(expected.status)
                .body(Body::from(expected.body))
                .unwrap();
            send.send_response(response);
            record::served(&line);
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

/// One request a [`Cassette`] saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `METHOD path?query`.
    pub line: String,
    /// Its JSON body, if it had one.
    pub body: Option<Value>,
    /// Whether a recorded exchange answered it (or holds it).
    pub matched: bool,
}

/// What a [`Cassette`]'s server knows: the recording and what it saw.
struct Tape {
    exchanges: Vec<(Exchange, bool)>,
    seen: Vec<Seen>,
}

/// A recorded API server for a client that makes requests concurrently:
/// each request is answered by the first unused recorded exchange it
/// matches, in whatever order the requests come; one that matches none is
/// answered 500 and noted (see [`Cassette::unexpected`]).
///
/// Requests that only one exchange can answer at a time (a Job's create,
/// watch and delete, told apart by its name) keep their own order; those
/// whose answers are all alike (a lookup that finds nothing) may take any.
pub struct Cassette {
    client: Client,
    tape: std::sync::Arc<std::sync::Mutex<Tape>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Cassette {
    /// A recorded server answering from `script` (must run in a tokio
    /// runtime; the server runs until the runtime or every client goes).
    pub fn new(script: Vec<Exchange>) -> Self {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, rbac::HOME_NAMESPACE);
        let tape = std::sync::Arc::new(std::sync::Mutex::new(Tape {
            exchanges: script.into_iter().map(|e| (e, false)).collect(),
            seen: Vec::new(),
        }));
        let shared = tape.clone();
        let server = tokio::spawn(async move {
            // Held requests wait here, unanswered, until the server goes.
            let mut held = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().to_string();
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or_default().to_string();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let body: Option<Value> = serde_json::from_slice(&bytes).ok();
                let answer = {
                    let mut tape = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let found = tape.exchanges.iter_mut().find(|(e, used)| {
                        !*used && e.matches(&method, &path, &query, body.as_ref())
                    });
                    let answer = found.map(|(e, used)| {
                        *used = true;
                        (e.held, e.status, e.body.clone())
                    });
                    let line = format!("{method} {path}?{query}");
                    if answer.is_some() {
                        record::served(&line);
                    }
                    tape.seen.push(Seen {
                        line,
                        body,
                        matched: answer.is_some(),
                    });
                    answer
                };
                let (status, bytes) = match answer {
                    Some((true, _, _)) => {
                        held.push(send);
                        continue;
                    }
                    Some((false, status, bytes)) => (status, bytes),
                    None => (
                        500,
                        serde_json::to_vec(&status(500, "InternalError", "not in the recording"))
                            .unwrap_or_default(),
                    ),
                };
                let response = Response::builder()
                    .status(status)
                    .body(Body::from(bytes))
                    .expect("a response");
                send.send_response(response);
            }
        });
        Cassette {
            client,
            tape,
            _server: server,
        }
    }

    /// A client of the recorded server.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn tape(&self) -> std::sync::MutexGuard<'_, Tape> {
        self.tape.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every request seen so far, in the order they came.
    pub fn seen(&self) -> Vec<Seen> {
        self.tape().seen.clone()
    }

    /// The requests no recorded exchange matched (`METHOD path?query`).
    pub fn unexpected(&self) -> Vec<String> {
        let tape = self.tape();
        tape.seen
            .iter()
            .filter(|s| !s.matched)
            .map(|s| s.line.clone())
            .collect()
    }

    /// The recorded exchanges no request has taken yet (`METHOD path
    /// [query fragments]`).
    pub fn unused(&self) -> Vec<String> {
        let tape = self.tape();
        tape.exchanges
            .iter()
            .filter(|(_, used)| !used)
            .map(|(e, _)| format!("{} {} {:?}", e.method, e.path, e.query))
            .collect()
    }
}
