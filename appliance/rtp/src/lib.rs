//! airlock-rtp: under construction.
