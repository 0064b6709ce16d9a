//! Predictions over the bus: the worker answers `<prefix>.infer.<model>` in
//! queue group `flotilla-inference`, so N workers share the load and a
//! client needs no address. The request body is CarlaRL's `/predict` body in
//! JSON or MessagePack (`Content-Type` or sniffing, as everywhere); the
//! reply is the `/predict` answer or CarlaRL's error body in the same
//! encoding, with headers `Status` (the HTTP status the error would have)
//! and `X-Request-ID`.

use crate::engine::InferenceEngine;
use flotilla_bus::{Bus, BusError, Message};
use flotilla_messages::inference::{unix_timestamp, ServingError, ServingErrorCode};
use flotilla_messages::Encoding;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The queue group every inference worker joins.
pub const QUEUE_GROUP: &str = "flotilla-inference";

/// Subscribes `subject` and answers every request until the bus closes or
/// the task is aborted.
pub async fn serve_predictions(
    bus: Arc<dyn Bus>,
    subject: &str,
    engine: Arc<InferenceEngine>,
) -> Result<JoinHandle<()>, BusError> {
    let mut requests = bus.queue_subscribe(subject, QUEUE_GROUP).await?;
    tracing::info!(
        subject,
        group = QUEUE_GROUP,
        "serving predictions over the bus"
    );
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let (bus, engine) = (bus.clone(), engine.clone());
            tokio::spawn(async move { answer(bus.as_ref(), &engine, msg).await });
        }
    }))
}

async fn answer(bus: &dyn Bus, engine: &InferenceEngine, msg: Message) {
    let Some(reply_to) = msg.reply.clone() else {
        return;
    };
    let _active = engine.metrics().track_active();
    let request_id = msg
        .header("X-Request-ID")
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let encoding = Encoding::detect(msg.header("Content-Type"), &msg.payload);
    let reply_encoding = encoding.as_ref().copied().unwrap_or(Encoding::Json);
    let outcome = match encoding {
        Ok(enc) => engine.predict_body(enc, &msg.payload).await,
        Err(e) => Err(ServingError::new(
            ServingErrorCode::ValidationError,
            e.to_string(),
        )),
    };
    let (status, body) = match outcome {
        Ok(response) => (200, reply_encoding.encode(&response)),
        Err(e) => {
            engine.record_error(&e, &msg.subject);
            let body = e.body(&request_id, unix_timestamp());
            (e.code.http_status(), reply_encoding.encode(&body))
        }
    };
    let body = body.unwrap_or_default();
    let out = Message::new(reply_to, body)
        .with_header("Content-Type", reply_encoding.content_type())
        .with_header("Status", status.to_string())
        .with_header("X-Request-ID", request_id);
    if let Err(e) = bus.publish(out).await {
        tracing::warn!(error = %e, "prediction reply not sent");
    }
}
