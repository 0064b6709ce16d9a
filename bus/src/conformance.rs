//! Conformance suite (filled in by the NATS backend work).
