//! One bad record does not stop the control plane (issue 11, defect 2): on
//! the embedded sled files, two studies' streams are damaged while `up` is
//! down. Before, `up` refused to start ("recovery of the solver failed") and
//! `audit` named only the first bad record. Now `up` starts, the damaged
//! studies answer `CORRUPT` naming their stream and seq, every other study
//! serves, `/readyz` lists both as `degraded` and the
//! `flotilla_aggregates_corrupt` metric counts them; `audit` lists both.

use crate::support::{flotilla, http_client, FlotillaUp};
use serde_json::{json, Value};

const STUDIES: [&str; 4] = ["a", "b", "c", "d"];
const DAMAGED: [(&str, u64); 2] = [("b", 2), ("d", 3)];

fn create() -> Value {
    json!({"type": "create_study", "seed": 3, "budget": 10, "bounds": {"x": {"min": 0, "max": 1}}})
}

#[test]
fn a_corrupt_stream_is_set_aside_and_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let mut up = FlotillaUp::start(&["--data-dir", &data_arg], dir.path());
    for id in STUDIES {
        assert_eq!(up.send("solver", id, &create()).0, 200);
        for _ in 0..2 {
            assert_eq!(up.send("solver", id, &json!({"type": "ask"})).0, 200);
        }
    }
    up.terminate();
    for (id, seq) in DAMAGED {
        flotilla_bus::embedded::corrupt_event_for_test(
            &data.join("log"),
            &format!("solver/{id}"),
            seq,
        );
    }

    up.restart();
    for id in ["a", "c"] {
        let (status, reply) = up.send("solver", id, &json!({"type": "ask"}));
        assert_eq!(status, 200, "{id} serves: {reply}");
    }
    for (id, seq) in DAMAGED {
        let (_, reply) = up.send("solver", id, &json!({"type": "ask"}));
        assert_eq!(reply["error"]["code"], "CORRUPT", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("solver/{id}")), "{message}");
        assert!(message.contains(&format!("seq {seq}")), "{message}");
    }

    let (status, ready) = up.get("/readyz");
    assert_eq!(
        (status, &ready["status"]),
        (200, &json!("degraded")),
        "{ready}"
    );
    let corrupt: Vec<&String> = ready["corrupt"].as_object().unwrap().keys().collect();
    assert_eq!(corrupt, ["solver/b", "solver/d"]);
    let metrics = http_client()
        .get(format!("{}/metrics", up.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("flotilla_aggregates_corrupt{actor=\"solver\"} 2"),
        "{metrics}"
    );
    up.terminate();

    let audit = flotilla(&["audit", "--data-dir", &data_arg]);
    assert_eq!(audit.status.code(), Some(1));
    let summary: Value = serde_json::from_slice(&audit.stdout).unwrap();
    let found: Vec<(String, u64)> = summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [("solver/b".to_string(), 2), ("solver/d".to_string(), 3)],
        "{summary}"
    );
}
