//! airlock-runtime: under construction.
