//! The tamper-evident audit log: one hash-chained JSON line per artifact created, blocked, uploaded or purged
//! and per policy change, with checkpoints signed by the appliance's Ed25519 key. Checkpoints leave the box
//! through the outbox, so a log rewritten or truncated after one left is detectable even by someone holding
//! the key.
//!
//! Modules: [`entry`] owns the line format (fields, kinds, timestamps, the hash of a line, the bytes a
//! checkpoint signs); [`keys`] owns the signing key file and public keys; [`mod@verify`] is the sans-IO
//! verifier (a log, and a log against the checkpoints published from it); [`log`] is the durable writer
//! (append-only file, fdatasync per entry, crash recovery on open).
//!
//! Subjects and details are stored in clear, kept for years and handed to auditors: callers pass ids only
//! (object keys, call ids, policy hashes), never personal data. This crate cannot tell the difference.

pub mod entry;
pub mod keys;
pub mod log;
pub mod verify;

pub use entry::{Entry, EventKind, Kind};
pub use keys::{KeyError, PublicKey, SigningKey, load_or_create_signing_key};
pub use log::{AuditError, AuditLog, Checkpoint, LOG_FILE, OpenReport};
pub use verify::{Input, Problem, Report, VerifyError, verify, verify_with_checkpoints};
