//! An in-process subject router with NATS core semantics.
//!
//! Subscribers get bounded channels; like a NATS server facing a slow
//! consumer, the router drops messages for a subscriber whose channel is full
//! rather than letting memory grow without bound.

use crate::{Bus, BusError, Message, Subscription};
use async_trait::async_trait;
use flotilla_messages::subjects::{is_publishable, is_valid_pattern, subject_matches};
use futures::channel::mpsc;
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many undelivered messages one subscriber may hold.
const SUBSCRIBER_CAPACITY: usize = 65_536;

struct Subscriber {
    pattern: String,
    group: Option<String>,
    tx: mpsc::Sender<Message>,
}

#[derive(Default)]
struct Routes {
    subscribers: Vec<Subscriber>,
}

/// The in-process bus. Cheap to clone; clones share the routes.
#[derive(Clone, Default)]
pub struct EmbeddedBus {
    routes: Arc<Mutex<Routes>>,
    round_robin: Arc<AtomicU64>,
}

impl EmbeddedBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, pattern: &str, group: Option<&str>) -> Result<Subscription, BusError> {
        if !is_valid_pattern(pattern) {
            return Err(BusError::InvalidSubject(pattern.to_string()));
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        self.lock().subscribers.push(Subscriber {
            pattern: pattern.to_string(),
            group: group.map(str::to_string),
            tx,
        });
        Ok(Subscription::new(rx.boxed()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Indexes of the subscribers that get `subject`: every plain match and
    /// one member of each matching queue group.
    fn recipients(&self, routes: &Routes, subject: &str) -> Vec<usize> {
        let mut plain = Vec::new();
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, s) in routes.subscribers.iter().enumerate() {
            if s.tx.is_closed() || !subject_matches(&s.pattern, subject) {
                continue;
            }
            match &s.group {
                None => plain.push(i),
                Some(g) => match groups.iter_mut().find(|(name, _)| name == g) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((g, vec![i])),
                },
            }
        }
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed) as usize;
        plain.extend(groups.iter().map(|(_, m)| m[turn % m.len()]));
        plain
    }

    fn route(&self, msg: Message) -> usize {
        let mut routes = self.lock();
        routes.subscribers.retain(|s| !s.tx.is_closed());
        let targets = self.recipients(&routes, &msg.subject);
        for &i in &targets {
            if let Err(e) = routes.subscribers[i].tx.try_send(msg.clone()) {
                if e.is_full() {
                    tracing::warn!(subject = %msg.subject, pattern = %routes.subscribers[i].pattern,
                        "slow consumer: message dropped");
                }
            }
        }
        targets.len()
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, msg: Message) -> Result<(), BusError> {
        if !is_publishable(&msg.subject) {
            return Err(BusError::InvalidSubject(msg.subject));
        }
        self.route(msg);
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        self.add(pattern, None)
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        if group.is_empty() || group.contains(char::is_whitespace) {
            return Err(BusError::InvalidSubject(format!("queue group {group:?}")));
        }
        self.add(pattern, Some(group))
    }

    async fn request(&self, mut msg: Message, timeout: Duration) -> Result<Message, BusError> {
        if !is_publishable(&msg.subject) {
            return Err(BusError::InvalidSubject(msg.subject));
        }
        let inbox = format!("_INBOX.{}", uuid::Uuid::new_v4().simple());
        let mut replies = self.add(&inbox, None)?;
        let subject = msg.subject.clone();
        msg.reply = Some(inbox);
        if self.route(msg) == 0 {
            return Err(BusError::NoResponders(subject));
        }
        match tokio::time::timeout(timeout, replies.next()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(BusError::Connection("bus closed".into())),
            Err(_) => Err(BusError::Timeout { subject, timeout }),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }
}
