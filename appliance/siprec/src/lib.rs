//! The SRS side of SIPREC (RFC 7866/7865): multipart bodies, SDP offer/answer for N recvonly streams matched
//! by `a=label`, recording metadata in all three namespaces, SDES keys for SRTP streams, and the per-call control state machine that turns
//! SIP requests into a `RecordingPlan`. Sans-IO: time is a parameter, sockets live in the runtime.

pub mod fuzz;
pub mod metadata;
pub mod multipart;
pub mod negotiate;
pub mod sdes;
pub mod sdp;
pub mod srs;
