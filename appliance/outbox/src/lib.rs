//! The outbox: everything that leaves the appliance (artifacts toward object storage, events toward the
//! event bus) waits in one durable on-disk spool until its sink acknowledges it. This crate owns the spool
//! ([`spool`]: checksummed records, fsync discipline, crash recovery, byte accounting for admission) and the
//! retry schedule ([`backoff`]); sinks and the tasks that drive them live with the runtime.

pub mod backoff;
pub mod spool;

pub use backoff::Backoff;
pub use spool::{
    Admission, Body, NewRecord, OpenReport, Payload, Record, RecordMeta, Retention, Seq, Sink, Spool,
    SpoolConfig, SpoolError, SpoolStats,
};
