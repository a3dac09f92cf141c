//! airlock-sip: under construction.
