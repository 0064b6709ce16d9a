//! Who may do what: principals, roles and permissions.
//!
//! A *principal* is the name an event is attributed to (the envelope's
//! `principal`): the name of the HTTP token that sent the command, or of the
//! NATS key that signed it. A *role* is what a token holds; a *permission*
//! is what a route needs. The gateway, the inference worker and the agent
//! check `Role::allows(permission)` before they act; the host records the
//! principal that the transport vouched for (see `flotilla-host`'s command
//! service). Keeping the table here means every entry point and the docs
//! read one definition.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The header a trusted forwarder (the gateway) sets on a command it puts on
/// the bus: the principal the command is attributed to.
pub const PRINCIPAL_HEADER: &str = "Flotilla-Principal";

/// The principal of a command when no authentication is configured (the
/// embedded default on loopback).
pub const ANONYMOUS: &str = "anonymous";
/// The principal of an unsigned NATS command, where the configuration
/// allows those.
pub const UNSIGNED: &str = "unsigned";
/// The principal of what the control plane does by itself: effect outcomes,
/// timers, pool ticks.
pub const CONTROL_PLANE: &str = "flotilla";

/// Names no token or key may take: they mean something already.
pub const RESERVED_PRINCIPALS: [&str; 3] = [ANONYMOUS, UNSIGNED, CONTROL_PLANE];

/// What a token holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Commands, queries, events, inference and model versions.
    Operator,
    /// Queries and events, read only.
    Viewer,
    /// Events and queries, read only, for audits.
    Auditor,
    /// The inference routes only.
    Inference,
}

impl Role {
    /// Every role, in order of decreasing power.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Viewer,
        Role::Auditor,
        Role::Inference,
    ];

    /// The role's name, as in token files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Inference => "inference",
        }
    }

    /// Parses a role name; the error lists the valid ones.
    pub fn parse(name: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown role {name:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }

    /// Whether a token of this role may do what `permission` names.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => true,
            Role::Viewer | Role::Auditor => {
                matches!(permission, Query | Events | Metrics | AgentRead)
            }
            Role::Inference => matches!(permission, Infer | Metrics),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Send commands to actors (`POST /v1/cmd/...`).
    Command,
    /// Read an aggregate's state or the list of ids (`GET /v1/query/...`).
    Query,
    /// Read the event log (`GET /v1/events`).
    Events,
    /// Ask the inference worker for actions (predict, metadata, warmup).
    Infer,
    /// Change what the inference worker serves (load, activate, roll back).
    ServeAdmin,
    /// Read `/metrics` when it is behind a token.
    Metrics,
    /// Read a node agent's HTTP routes other than health.
    AgentRead,
}

impl Permission {
    /// The permission's name, as in 403 bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Command => "command",
            Permission::Query => "query",
            Permission::Events => "events",
            Permission::Infer => "infer",
            Permission::ServeAdmin => "serve_admin",
            Permission::Metrics => "metrics",
            Permission::AgentRead => "agent_read",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a principal name for a token or key: 1 to 64 characters of
/// `[A-Za-z0-9._-]`, and not one of [`RESERVED_PRINCIPALS`].
pub fn validate_principal(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("name {name:?}: must be 1 to 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?}: {c:?} is not allowed (letters, digits, '.', '_', '-')"
        ));
    }
    if RESERVED_PRINCIPALS.contains(&name) {
        return Err(format!("name {name:?} is reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admins_and_operators_send_commands() {
        let senders: Vec<_> = Role::ALL
            .into_iter()
            .filter(|r| r.allows(Permission::Command))
            .collect();
        assert_eq!(senders, vec![Role::Admin, Role::Operator]);
    }

    #[test]
    fn readers_read_and_inference_infers() {
        assert!(Role::Viewer.allows(Permission::Events));
        assert!(Role::Auditor.allows(Permission::Query));
        assert!(!Role::Auditor.allows(Permission::ServeAdmin));
        assert!(Role::Inference.allows(Permission::Infer));
        assert!(!Role::Inference.allows(Permission::Query));
        assert!(!Role::Viewer.allows(Permission::Infer));
    }

    #[test]
    fn role_names_round_trip_and_unknown_ones_list_the_valid() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
        let err = Role::parse("root").unwrap_err();
        assert!(
            err.contains("admin, operator, viewer, auditor, inference"),
            "{err}"
        );
    }

    #[test]
    fn principal_names_are_checked() {
        assert!(validate_principal("alice.ops-1").is_ok());
        assert!(validate_principal("").is_err());
        assert!(validate_principal("a b").unwrap_err().contains("' '"));
        assert!(validate_principal("flotilla")
            .unwrap_err()
            .contains("reserved"));
        assert!(validate_principal(&"x".repeat(65)).is_err());
    }
}
