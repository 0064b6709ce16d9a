//! Whom a command on the bus is attributed to.
//!
//! On the embedded bus every publisher is in this process: the gateway has
//! authenticated the HTTP caller and names it in `Flotilla-Principal`, and
//! nothing else can publish, so the header is taken as is. On NATS anyone
//! the server lets publish could set that header, so a command names its
//! sender only by a signature ([`flotilla_messages::auth::signature`]),
//! checked against the known keys; unsigned commands are accepted (as
//! `unsigned`) only where the configuration allows them.

use flotilla_bus::Message;
use flotilla_messages::auth::{self, KeyRing};
use flotilla_messages::{ErrorCode, Rejection};
use std::sync::Arc;

/// How the command service attributes commands.
#[derive(Debug, Clone)]
pub enum CommandTrust {
    /// The bus is this process's own: `Flotilla-Principal` is taken as set
    /// (absent: `anonymous`).
    Transport,
    /// A shared bus: signed commands are verified against `keys`; unsigned
    /// ones are refused unless `accept_unsigned`.
    Signed {
        /// The known public keys.
        keys: Arc<KeyRing>,
        /// Whether unsigned commands are accepted, recorded as `unsigned`.
        accept_unsigned: bool,
    },
}

impl CommandTrust {
    /// The principal to record for `msg`, or why it is refused.
    pub fn principal(&self, msg: &Message, now_micros: i64) -> Result<String, Rejection> {
        match self {
            CommandTrust::Transport => Ok(msg
                .header(auth::PRINCIPAL_HEADER)
                .unwrap_or(auth::ANONYMOUS)
                .to_string()),
            CommandTrust::Signed {
                keys,
                accept_unsigned,
            } => {
                if msg.header(auth::signature::SIGNATURE_HEADER).is_some() {
                    let verdict =
                        keys.verify(&msg.subject, &msg.payload, |h| msg.header(h), now_micros)?;
                    if let Some(principal) = verdict {
                        return Ok(principal);
                    }
                }
                // Unsigned, or signed by a key nobody listed (which vouches
                // for no one): the same thing.
                if *accept_unsigned {
                    return Ok(auth::UNSIGNED.to_string());
                }
                let why = match msg.header(auth::signature::SIGNER_HEADER) {
                    Some(key) => format!("key {key} is not a known principal"),
                    None => "unsigned command".to_string(),
                };
                Err(Rejection::new(
                    ErrorCode::Unauthenticated,
                    format!(
                        "{why}: this control plane accepts only NATS commands signed by a \
                         key of its principals file (send with --nats-nkey SEED_FILE, or set \
                         unsigned_commands = \"accept\")"
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_messages::auth::{CommandSigner, KeyRole, KnownKey};
    use flotilla_messages::SigningKey;

    fn signed_by(key: &SigningKey, subject: &str, body: &str) -> Message {
        let signer = CommandSigner::from_key(key.clone());
        Message::new(subject, body.as_bytes().to_vec()).signed_by(&signer, None)
    }

    fn signed_trust(key: &SigningKey, accept_unsigned: bool) -> CommandTrust {
        let mut ring = KeyRing::default();
        ring.insert(
            key.verifying_key(),
            KnownKey {
                name: "alice".into(),
                role: KeyRole::Operator,
            },
        );
        CommandTrust::Signed {
            keys: Arc::new(ring),
            accept_unsigned,
        }
    }

    #[test]
    fn an_unknown_key_counts_as_unsigned_where_those_are_accepted() {
        let known = SigningKey::from_bytes(&[7; 32]);
        let stranger = SigningKey::from_bytes(&[8; 32]);
        let now = chrono::Utc::now().timestamp_micros();
        let msg = signed_by(&stranger, "f.cmd.solver.s", "{}");
        assert_eq!(
            signed_trust(&known, true).principal(&msg, now).unwrap(),
            "unsigned"
        );
        let err = signed_trust(&known, false)
            .principal(&msg, now)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);
    }

    #[test]
    fn the_embedded_bus_takes_the_gateways_word() {
        let now = chrono::Utc::now().timestamp_micros();
        let msg =
            Message::new("f.cmd.solver.s", b"{}".to_vec()).with_header("Flotilla-Principal", "bob");
        assert_eq!(CommandTrust::Transport.principal(&msg, now).unwrap(), "bob");
        let bare = Message::new("f.cmd.solver.s", b"{}".to_vec());
        assert_eq!(
            CommandTrust::Transport.principal(&bare, now).unwrap(),
            "anonymous"
        );
    }

    #[test]
    fn nats_needs_a_signature_or_an_explicit_allowance() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let now = chrono::Utc::now().timestamp_micros();
        let msg = signed_by(&key, "f.cmd.solver.s", "{}");
        assert_eq!(
            signed_trust(&key, false).principal(&msg, now).unwrap(),
            "alice"
        );
        let forged = Message::new("f.cmd.solver.s", b"{}".to_vec())
            .with_header("Flotilla-Principal", "alice");
        let err = signed_trust(&key, false)
            .principal(&forged, now)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);
        assert_eq!(
            signed_trust(&key, true).principal(&forged, now).unwrap(),
            "unsigned"
        );
    }
}
