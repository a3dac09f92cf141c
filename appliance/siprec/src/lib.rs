//! airlock-siprec: under construction.
