//! Subject names, ids and NATS wildcard matching.
//!
//! Every subject is `<prefix>.<kind>.<actor>[.<id>]` with a configurable
//! prefix (default `flotilla`). Ids are single subject tokens, so they are
//! restricted to `[A-Za-z0-9_-]{1,64}`: no dots, no wildcards, nothing a shell
//! or a URL needs to escape. Both bus backends route with [`subject_matches`],
//! which is why the embedded backend behaves like a real NATS server.

use std::fmt;
use std::str::FromStr;

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "flotilla";

/// An id or subject token that is not `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: must match [A-Za-z0-9_-]{{1,64}}")]
pub struct IdError {
    /// What the token names (`id`, `study id`, `prefix token`...).
    pub what: &'static str,
    /// The offending value.
    pub value: String,
}

/// Checks that `value` matches `[A-Za-z0-9_-]{1,64}`.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdError {
            what,
            value: value.to_string(),
        })
    }
}

/// The actors of Flotilla: the five of the brief, and the study runs that
/// tie the solver to the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Actor {
    /// Hyperparameter search: studies and trials.
    Solver,
    /// Trials and jobs on processes or Kubernetes.
    Scheduler,
    /// GPU node pools.
    Provisioner,
    /// Per-node GPU health.
    Health,
    /// Policy serving.
    Inference,
    /// Study runs: the process manager that runs a study's trials as jobs
    /// (`study_run/<study>`, see [`crate::study_run`]).
    StudyRun,
}

impl Actor {
    /// Every actor, in a stable order.
    pub const ALL: [Actor; 6] = [
        Actor::Solver,
        Actor::Scheduler,
        Actor::Provisioner,
        Actor::Health,
        Actor::Inference,
        Actor::StudyRun,
    ];

    /// The subject token, e.g. `solver`.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Solver => "solver",
            Actor::Scheduler => "scheduler",
            Actor::Provisioner => "provisioner",
            Actor::Health => "health",
            Actor::Inference => "inference",
            Actor::StudyRun => "study_run",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the actors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown actor {0:?}: expected one of solver, scheduler, provisioner, health, inference, study_run")]
pub struct UnknownActor(pub String);

impl FromStr for Actor {
    type Err = UnknownActor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Actor::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownActor(s.to_string()))
    }
}

/// An aggregate's stream name, `<actor>/<id>`: the unit of ordering,
/// optimistic concurrency and hash chaining in the event log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName {
    /// The owning actor.
    pub actor: Actor,
    /// The aggregate id.
    pub id: String,
}

impl StreamName {
    /// A stream name, validating the id.
    pub fn new(actor: Actor, id: &str) -> Result<Self, IdError> {
        validate_id("id", id)?;
        Ok(StreamName {
            actor,
            id: id.to_string(),
        })
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.actor, self.id)
    }
}

/// A string that is not `<actor>/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream name {0:?}: expected <actor>/<id>, e.g. solver/my-study")]
pub struct BadStreamName(pub String);

impl FromStr for StreamName {
    type Err = BadStreamName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadStreamName(s.to_string());
        let (actor, id) = s.split_once('/').ok_or_else(bad)?;
        let actor = actor.parse().map_err(|_| bad())?;
        StreamName::new(actor, id).map_err(|_| bad())
    }
}

/// What a subject is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// `cmd`: a command, request/reply.
    Command,
    /// `evt`: a published event envelope.
    Event,
    /// `query`: a state query, request/reply.
    Query,
}

impl SubjectKind {
    fn token(self) -> &'static str {
        match self {
            SubjectKind::Command => "cmd",
            SubjectKind::Event => "evt",
            SubjectKind::Query => "query",
        }
    }
}

/// A parsed `<prefix>.<kind>.<actor>[.<id>]` subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSubject {
    /// Command, event or query.
    pub kind: SubjectKind,
    /// The actor token, not yet checked against [`Actor`].
    pub actor: String,
    /// The aggregate id, absent for list queries.
    pub id: Option<String>,
}

/// Builds and parses subjects under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

/// A prefix that is not a valid sequence of subject tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subject prefix {0:?}: dot-separated tokens of [A-Za-z0-9_-]")]
pub struct BadPrefix(pub String);

impl Default for Subjects {
    fn default() -> Self {
        Subjects {
            prefix: DEFAULT_PREFIX.to_string(),
        }
    }
}

impl Subjects {
    /// Subjects under `prefix` (e.g. `flotilla` or `prod.flotilla`).
    pub fn new(prefix: &str) -> Result<Self, BadPrefix> {
        let ok = prefix
            .split('.')
            .all(|t| validate_id("prefix token", t).is_ok());
        if ok {
            Ok(Subjects {
                prefix: prefix.to_string(),
            })
        } else {
            Err(BadPrefix(prefix.to_string()))
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.cmd.<actor>.<id>`.
    pub fn command(&self, stream: &StreamName) -> String {
        self.of(SubjectKind::Command, stream)
    }

    /// `<prefix>.evt.<actor>.<id>`.
    pub fn event(&self, stream: &StreamName) -> String {
        self.of(SubjectKind::Event, stream)
    }

    /// `<prefix>.query.<actor>.<id>`.
    pub fn query(&self, stream: &StreamName) -> String {
        self.of(SubjectKind::Query, stream)
    }

    /// `<prefix>.query.<actor>`: the list query.
    pub fn query_list(&self, actor: Actor) -> String {
        format!("{}.query.{}", self.prefix, actor)
    }

    /// `<prefix>.cmd.<actor>.*`: what an actor's host subscribes to.
    pub fn commands_of(&self, actor: Actor) -> String {
        format!("{}.cmd.{}.*", self.prefix, actor)
    }

    /// `<prefix>.query.<actor>.*`.
    pub fn queries_of(&self, actor: Actor) -> String {
        format!("{}.query.{}.*", self.prefix, actor)
    }

    /// `<prefix>.evt.>`: every event; the JetStream stream's subject filter.
    pub fn all_events(&self) -> String {
        format!("{}.evt.>", self.prefix)
    }

    /// `<prefix>.infer.<model>`.
    pub fn infer(&self, model: &str) -> String {
        format!("{}.infer.{}", self.prefix, model)
    }

    /// `<prefix>.health.<node>`.
    pub fn health(&self, node: &str) -> String {
        format!("{}.health.{}", self.prefix, node)
    }

    fn of(&self, kind: SubjectKind, stream: &StreamName) -> String {
        format!(
            "{}.{}.{}.{}",
            self.prefix,
            kind.token(),
            stream.actor,
            stream.id
        )
    }

    /// Parses a cmd/evt/query subject under this prefix; `None` otherwise.
    pub fn parse(&self, subject: &str) -> Option<ParsedSubject> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        let kind = match tokens.next()? {
            "cmd" => SubjectKind::Command,
            "evt" => SubjectKind::Event,
            "query" => SubjectKind::Query,
            _ => return None,
        };
        let actor = tokens.next()?.to_string();
        let id = tokens.next().map(str::to_string);
        if tokens.next().is_some() {
            return None;
        }
        Some(ParsedSubject { kind, actor, id })
    }
}

/// NATS subject matching: `*` matches one token, `>` one or more trailing
/// tokens. Empty tokens never match.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut sub = subject.split('.');
    loop {
        match (pat.next(), sub.next()) {
            (Some(">"), Some(s)) => return !s.is_empty() && sub.all(|t| !t.is_empty()),
            (Some("*"), Some(s)) if !s.is_empty() => {}
            (Some(p), Some(s)) if !s.is_empty() && p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `subject` is a valid subject to publish on: non-empty tokens, no wildcards, no spaces.
pub fn is_publishable(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && !t.bytes().any(|b| b.is_ascii_whitespace())
        })
}

/// Whether `pattern` is a valid subscription pattern (`>` only as the last token).
pub fn is_valid_pattern(pattern: &str) -> bool {
    let tokens: Vec<&str> = pattern.split('.').collect();
    !pattern.is_empty()
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.bytes().any(|b| b.is_ascii_whitespace())
                && (*t != ">" || i == tokens.len() - 1)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("id", "study-1_A").is_ok());
        assert!(validate_id("id", &"a".repeat(64)).is_ok());
        for bad in ["", "a.b", "a*", "a b", "é", &"a".repeat(65)] {
            assert!(validate_id("id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subjects_are_built_and_parsed() {
        let s = Subjects::new("prod.flotilla").unwrap();
        let stream = StreamName::new(Actor::Solver, "s1").unwrap();
        assert_eq!(s.command(&stream), "prod.flotilla.cmd.solver.s1");
        let parsed = s.parse("prod.flotilla.query.solver").unwrap();
        assert_eq!(parsed.kind, SubjectKind::Query);
        assert_eq!(parsed.id, None);
        assert!(s.parse("other.cmd.solver.s1").is_none());
        assert!(Subjects::new("a..b").is_err());
        assert!(Subjects::new("a.*").is_err());
    }

    #[test]
    fn stream_names_round_trip() {
        let s: StreamName = "solver/abc".parse().unwrap();
        assert_eq!(s.to_string(), "solver/abc");
        assert!("nope/abc".parse::<StreamName>().is_err());
        assert!("solver/a.b".parse::<StreamName>().is_err());
    }

    #[test]
    fn wildcards_follow_nats() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,4}"
    }

    proptest! {
        #[test]
        fn a_subject_matches_itself_and_gt_of_its_head(tokens in proptest::collection::vec(token(), 1..6)) {
            let subject = tokens.join(".");
            prop_assert!(subject_matches(&subject, &subject));
            prop_assert!(subject_matches(">", &subject));
            if tokens.len() > 1 {
                let head = format!("{}.>", tokens[0]);
                prop_assert!(subject_matches(&head, &subject));
            }
        }

        #[test]
        fn star_replaces_exactly_one_token(tokens in proptest::collection::vec(token(), 1..6), i in 0usize..6) {
            let i = i % tokens.len();
            let subject = tokens.join(".");
            let mut pat = tokens.clone();
            pat[i] = "*".into();
            let pattern = pat.join(".");
            prop_assert!(subject_matches(&pattern, &subject));
            let mut longer = tokens.clone();
            longer.push("x".into());
            let longer = longer.join(".");
            prop_assert!(!subject_matches(&pattern, &longer));
        }

        #[test]
        fn matching_never_panics(p in "[a-z*>. ]{0,12}", s in "[a-z. ]{0,12}") {
            let _ = subject_matches(&p, &s);
        }

        #[test]
        fn valid_ids_are_accepted(id in "[A-Za-z0-9_-]{1,64}") {
            prop_assert!(validate_id("id", &id).is_ok());
        }
    }
}
