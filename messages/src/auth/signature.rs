//! Signed commands: how a NATS command proves who sent it.
//!
//! NATS tells a subscriber nothing about the publisher, and the server's
//! permissions say only which *role* may publish a subject. So a client that
//! wants its commands attributed signs each one with its Ed25519 key (the
//! nkey seed it connects with) and sends four headers:
//!
//! | header | value |
//! |---|---|
//! | `Flotilla-Signer` | the signer's public key: an nkey (`U…`) or 64 hex digits |
//! | `Flotilla-Principal` | only from a key that may vouch (the control plane's gateway): the HTTP caller it authenticated; absent, the command is the signer's own |
//! | `Flotilla-Signed-At` | when, in microseconds since the epoch |
//! | `Flotilla-Signature` | hex Ed25519 signature of [`signed_bytes`] |
//!
//! The host checks the signature against a [`KeyRing`] of known public keys
//! (from `flotilla nats-config`'s `principals.toml`, plus the control
//! plane's own key) and records the key's name. The signature covers the
//! subject, the body, the idempotency key and the time, so it cannot be moved
//! to another aggregate or command, and it expires after [`MAX_SKEW`]:
//! a captured command can be replayed only within that window, where a
//! repeated idempotency key answers the first reply again.

use super::PRINCIPAL_HEADER;
use crate::error::{ErrorCode, Rejection};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The signer's public key.
pub const SIGNER_HEADER: &str = "Flotilla-Signer";
/// When the command was signed (microseconds since the epoch).
pub const SIGNED_AT_HEADER: &str = "Flotilla-Signed-At";
/// The Ed25519 signature (hex).
pub const SIGNATURE_HEADER: &str = "Flotilla-Signature";
/// How far a signature's time may be from the verifier's clock, in
/// microseconds (5 minutes, both ways).
pub const MAX_SKEW: i64 = 5 * 60 * 1_000_000;

/// What a signature covers: a domain tag, then the subject, principal,
/// signed-at time and idempotency key, each on its line, then the body's
/// SHA-256.
pub fn signed_bytes(
    subject: &str,
    principal: &str,
    signed_at: i64,
    msg_id: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let head = format!(
        "flotilla-command-v1\n{subject}\n{principal}\n{signed_at}\n{}\n",
        msg_id.unwrap_or("")
    );
    let mut m = head.into_bytes();
    m.extend_from_slice(&Sha256::digest(body));
    m
}

/// The role of a NATS identity, as `flotilla nats-config` writes it in
/// `principals.toml` (one NATS user per role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRole {
    /// The control plane (`up`): may speak for the HTTP callers its gateway
    /// authenticated.
    ControlPlane,
    /// A person or tool that sends commands.
    Operator,
    /// Reads the log; sends no commands.
    Auditor,
    /// A node's health agent; sends no commands.
    Agent,
    /// An inference worker; sends no commands.
    Worker,
    /// A program that requests predictions on `infer.>`; sends no commands.
    InferenceClient,
}

impl KeyRole {
    /// The role's name, as in `principals.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::ControlPlane => "control-plane",
            KeyRole::Operator => "operator",
            KeyRole::Auditor => "auditor",
            KeyRole::Agent => "agent",
            KeyRole::Worker => "worker",
            KeyRole::InferenceClient => "inference-client",
        }
    }

    /// Whether commands signed by such a key are accepted.
    pub fn may_command(self) -> bool {
        matches!(self, KeyRole::ControlPlane | KeyRole::Operator)
    }
}

/// The raw Ed25519 public key a `Flotilla-Signer` (or `principals.toml`)
/// value names: a NATS user nkey (`U…`) or 64 hex digits.
pub fn decode_public_key(text: &str) -> Option<[u8; 32]> {
    if text.len() == 64 {
        let mut out = [0u8; 32];
        return hex::decode_to_slice(text, &mut out).ok().map(|()| out);
    }
    nkeys::from_public_key(text).ok().map(|(_, key)| key)
}

/// One known key: its name and what it may do.
#[derive(Debug, Clone)]
pub struct KnownKey {
    /// The principal its commands are recorded under.
    pub name: String,
    /// What it may do.
    pub role: KeyRole,
}

/// A client's key, with which it signs its commands.
pub struct CommandSigner {
    key: SigningKey,
    public: String,
}

impl CommandSigner {
    /// A signer; `public` is how the key is named in the `Flotilla-Signer`
    /// header (its nkey, or hex). The verifier records the name the key is
    /// known by.
    pub fn new(key: SigningKey, public: String) -> Self {
        CommandSigner { key, public }
    }

    /// A signer named by its raw public key in hex (the control plane's).
    pub fn from_key(key: SigningKey) -> Self {
        let public = hex::encode(key.verifying_key().to_bytes());
        CommandSigner { key, public }
    }

    /// A signer from an nkey seed (`SU…`), named by its public nkey.
    pub fn from_nkey_seed(seed: &str) -> Result<Self, String> {
        let pair = nkeys::KeyPair::from_seed(seed).map_err(|e| e.to_string())?;
        let (_, raw) = nkeys::decode_seed(seed).map_err(|e| e.to_string())?;
        Ok(CommandSigner::new(
            SigningKey::from_bytes(&raw),
            pair.public_key(),
        ))
    }

    /// The headers that sign a command to `subject` with `body`, at
    /// `signed_at` (microseconds): the signer's own, or, with `for_whom`,
    /// on behalf of a principal it authenticated (only a key that may vouch
    /// is believed).
    pub fn headers(
        &self,
        subject: &str,
        for_whom: Option<&str>,
        signed_at: i64,
        msg_id: Option<&str>,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let principal = for_whom.unwrap_or("");
        let sig = self
            .key
            .sign(&signed_bytes(subject, principal, signed_at, msg_id, body));
        let mut headers = vec![
            (SIGNER_HEADER, self.public.clone()),
            (SIGNED_AT_HEADER, signed_at.to_string()),
            (SIGNATURE_HEADER, hex::encode(sig.to_bytes())),
        ];
        if let Some(who) = for_whom {
            headers.push((PRINCIPAL_HEADER, who.to_string()));
        }
        headers
    }
}

/// The public keys a host accepts signed commands from.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    /// By raw public key; the parsed key is kept, since decompressing it
    /// costs as much as a third of a verification.
    keys: HashMap<[u8; 32], (VerifyingKey, KnownKey)>,
}

impl KeyRing {
    /// Adds a key.
    pub fn insert(&mut self, public: VerifyingKey, known: KnownKey) {
        self.keys.insert(public.to_bytes(), (public, known));
    }

    /// Whether the ring knows no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a signed command and answers the principal to record.
    ///
    /// `header` reads the message's headers. `Ok(None)`: the signer is not
    /// a key of the ring (the caller decides whether that counts as
    /// unsigned). Refuses with `UNAUTHENTICATED` (bad or expired signature) or
    /// `FORBIDDEN` (a key speaking for another, or a role that may not send
    /// commands); never panics on hostile headers.
    pub fn verify<'a>(
        &self,
        subject: &str,
        body: &[u8],
        header: impl Fn(&str) -> Option<&'a str>,
        now_micros: i64,
    ) -> Result<Option<String>, Rejection> {
        let unauthenticated = |why: String| Rejection::new(ErrorCode::Unauthenticated, why);
        let need = |name: &str| {
            header(name)
                .ok_or_else(|| unauthenticated(format!("signed command: missing header {name}")))
        };
        let signer_text = need(SIGNER_HEADER)?;
        let public = decode_public_key(signer_text)
            .ok_or_else(|| unauthenticated(format!("{SIGNER_HEADER}: not a public key")))?;
        let Some((key, known)) = self.keys.get(&public) else {
            return Ok(None);
        };
        let principal = header(PRINCIPAL_HEADER).unwrap_or("");
        let signed_at: i64 = need(SIGNED_AT_HEADER)?
            .parse()
            .map_err(|_| unauthenticated(format!("{SIGNED_AT_HEADER}: not a number")))?;
        if now_micros.abs_diff(signed_at) > MAX_SKEW.unsigned_abs() {
            return Err(unauthenticated(format!(
                "{SIGNED_AT_HEADER}: the signature is more than 5 minutes from this host's clock (expired or clock skew)"
            )));
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(need(SIGNATURE_HEADER)?, &mut sig)
            .map_err(|_| unauthenticated(format!("{SIGNATURE_HEADER}: not 128 hex digits")))?;
        let message = signed_bytes(subject, principal, signed_at, header("Nats-Msg-Id"), body);
        key.verify(&message, &Signature::from_bytes(&sig))
            .map_err(|_| unauthenticated(format!("{SIGNATURE_HEADER}: invalid signature")))?;
        let forbidden = |why: String| Err(Rejection::new(ErrorCode::Forbidden, why));
        match known.role {
            role if !role.may_command() => forbidden(format!(
                "{} ({}) lacks the permission command",
                known.name,
                role.as_str()
            )),
            KeyRole::ControlPlane if !principal.is_empty() => Ok(Some(principal.to_string())),
            _ if !principal.is_empty() && principal != known.name => forbidden(format!(
                "key {} may not send commands for {principal:?}",
                known.name
            )),
            _ => Ok(Some(known.name.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn ring() -> KeyRing {
        let mut ring = KeyRing::default();
        let entry = |name: &str, role| KnownKey {
            name: name.into(),
            role,
        };
        ring.insert(key(1).verifying_key(), entry("alice", KeyRole::Operator));
        ring.insert(key(2).verifying_key(), entry("audit", KeyRole::Auditor));
        ring.insert(
            key(3).verifying_key(),
            entry("flotilla", KeyRole::ControlPlane),
        );
        ring
    }

    fn signer(n: u8) -> CommandSigner {
        CommandSigner::from_key(key(n))
    }

    #[test]
    fn signers_are_named_by_nkey_or_hex() {
        let user = nkeys::KeyPair::new_user();
        let raw = decode_public_key(&user.public_key()).unwrap();
        let seed = nkeys::decode_seed(&user.seed().unwrap()).unwrap().1;
        assert_eq!(
            raw,
            SigningKey::from_bytes(&seed).verifying_key().to_bytes()
        );
        assert_eq!(decode_public_key(&hex::encode(raw)), Some(raw));
        assert_eq!(decode_public_key("Unot-a-key"), None);
    }

    fn check(
        headers: &[(&'static str, String)],
        subject: &str,
        body: &[u8],
        now: i64,
    ) -> Result<String, Rejection> {
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        ring()
            .verify(subject, body, find, now)?
            .ok_or_else(|| Rejection::new(ErrorCode::Unauthenticated, "not a known principal"))
    }

    #[test]
    fn a_known_operator_is_recorded_under_its_name() {
        let mut h = signer(1)
            .headers("f.cmd.solver.s1", None, NOW, Some("k1"), b"{}")
            .to_vec();
        h.push(("Nats-Msg-Id", "k1".into()));
        assert_eq!(
            check(&h, "f.cmd.solver.s1", b"{}", NOW + 1_000_000).unwrap(),
            "alice"
        );
        h.last_mut().unwrap().1 = "k2".into();
        let err = check(&h, "f.cmd.solver.s1", b"{}", NOW).unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::Unauthenticated,
            "the idempotency key is signed"
        );
    }

    #[test]
    fn a_signature_does_not_move_to_another_subject_or_body() {
        let h = signer(1).headers("f.cmd.solver.s1", None, NOW, None, b"{}");
        for (subject, body) in [
            ("f.cmd.solver.s2", &b"{}"[..]),
            ("f.cmd.solver.s1", b"{\"n\":1}"),
        ] {
            let err = check(&h, subject, body, NOW).unwrap_err();
            assert_eq!(err.code, ErrorCode::Unauthenticated, "{subject}");
        }
    }

    #[test]
    fn unknown_keys_expired_signatures_and_missing_headers_are_refused() {
        let stranger = signer(9).headers("s", None, NOW, None, b"");
        assert!(check(&stranger, "s", b"", NOW)
            .unwrap_err()
            .message
            .contains("not a known"));
        let old = signer(1).headers("s", None, NOW, None, b"");
        let err = check(&old, "s", b"", NOW + MAX_SKEW + 1).unwrap_err();
        assert!(err.message.contains("5 minutes"), "{}", err.message);
        let err = check(&old[..2], "s", b"", NOW).unwrap_err();
        assert!(err.message.contains(SIGNATURE_HEADER), "{}", err.message);
        let mut hostile = old.clone();
        hostile[1].1 = i64::MIN.to_string();
        let err = check(&hostile, "s", b"", NOW).unwrap_err();
        assert!(
            err.message.contains("5 minutes"),
            "no overflow: {}",
            err.message
        );
    }

    #[test]
    fn a_roles_name_is_how_principals_toml_spells_it_and_only_two_command() {
        let all = [
            KeyRole::ControlPlane,
            KeyRole::Operator,
            KeyRole::Auditor,
            KeyRole::Agent,
            KeyRole::Worker,
            KeyRole::InferenceClient,
        ];
        for role in all {
            let parsed: KeyRole = serde_json::from_str(&format!("{:?}", role.as_str())).unwrap();
            assert_eq!(parsed, role);
        }
        assert_eq!(KeyRole::InferenceClient.as_str(), "inference-client");
        let commanding: Vec<_> = all.into_iter().filter(|r| r.may_command()).collect();
        assert_eq!(commanding, [KeyRole::ControlPlane, KeyRole::Operator]);
    }

    #[test]
    fn only_the_control_plane_speaks_for_others_and_auditors_do_not_command() {
        let vouched = signer(3).headers("s", Some("bob"), NOW, None, b"");
        assert_eq!(check(&vouched, "s", b"", NOW).unwrap(), "bob");
        let own = signer(3).headers("s", None, NOW, None, b"");
        assert_eq!(check(&own, "s", b"", NOW).unwrap(), "flotilla");
        let mut moved = signer(1).headers("s", None, NOW, None, b"");
        moved.push((PRINCIPAL_HEADER, "bob".into()));
        assert_eq!(
            check(&moved, "s", b"", NOW).unwrap_err().code,
            ErrorCode::Unauthenticated,
            "the principal is signed"
        );
        let posing = signer(1).headers("s", Some("bob"), NOW, None, b"");
        assert_eq!(
            check(&posing, "s", b"", NOW).unwrap_err().code,
            ErrorCode::Forbidden
        );
        let auditor = signer(2).headers("s", None, NOW, None, b"");
        let err = check(&auditor, "s", b"", NOW).unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
        assert!(err.message.contains("command"), "{}", err.message);
    }
}
