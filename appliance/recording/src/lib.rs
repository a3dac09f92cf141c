//! airlock-recording: under construction.
