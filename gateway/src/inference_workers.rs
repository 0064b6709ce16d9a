//! `GET /v1/inference/workers`: the Prometheus text of every inference
//! worker `flotilla up` was told about (`--inference-worker URL`), so the
//! dashboard can compute their requests/s and latency between two reads.
//! Workers are separate processes; one that does not answer is reported
//! with its error, never as a failure of the route:
//! `{"ok": true, "result": {"workers": [{"url", "metrics"} | {"url", "error"}]}}`.

use crate::GatewayState;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Duration;

/// How long one worker's `/metrics` may take.
const FETCH_WITHIN: Duration = Duration::from_secs(3);

/// One client for every read, so connections to the workers are kept
/// alive between the dashboard's polls; why it could not be built, if not.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(FETCH_WITHIN)
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The route's path.
pub const PATH: &str = "/v1/inference/workers";

/// `GET /v1/inference/workers`: each worker's `/metrics` text, or why it
/// could not be read.
pub async fn workers(state: web::Data<GatewayState>) -> HttpResponse {
    let samples: Vec<Value> = match client() {
        Ok(client) => {
            let reads = state.inference_workers.iter().map(|url| read(client, url));
            futures::future::join_all(reads).await
        }
        Err(e) => state
            .inference_workers
            .iter()
            .map(|url| json!({"url": url, "error": e}))
            .collect(),
    };
    HttpResponse::Ok().json(json!({"ok": true, "result": {"workers": samples}}))
}

/// `{"url", "metrics"}` of the worker at `url`, or `{"url", "error"}`.
async fn read(client: &reqwest::Client, url: &str) -> Value {
    let metrics = format!("{}/metrics", url.trim_end_matches('/'));
    let text = match client.get(&metrics).send().await {
        Ok(r) => match r.error_for_status() {
            Ok(r) => r.text().await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match text {
        Ok(text) => json!({"url": url, "metrics": text}),
        Err(e) => json!({"url": url, "error": e.to_string()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};

    #[actix_rt::test]
    async fn each_worker_gives_its_metrics_or_its_error() {
        // A real worker's stand-in on loopback: an HTTP server with /metrics.
        let worker = actix_web::HttpServer::new(|| {
            App::new().route(
                "/metrics",
                web::get().to(|| async { "carla_rl_request_duration_seconds_count 7\n" }),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let up = format!("http://{}/", worker.addrs()[0]);
        let server = worker.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        let down = format!("http://127.0.0.1:{}", crate::testing::closed_port());
        let mut state = crate::testing::state();
        state.inference_workers = vec![up.clone(), down.clone()];
        let app = test::init_service(App::new().configure(crate::configure(state))).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(PATH).to_request()).await;
        assert_eq!(res.status(), 200);
        let body: Value = test::read_body_json(res).await;
        let workers = body["result"]["workers"].as_array().unwrap();
        assert_eq!(workers[0]["url"], up.as_str());
        assert_eq!(
            workers[0]["metrics"],
            "carla_rl_request_duration_seconds_count 7\n"
        );
        assert_eq!(workers[1]["url"], down.as_str());
        assert!(
            workers[1]["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        handle.stop(false).await;
    }
}
