//! airlock-telemetry: under construction.
