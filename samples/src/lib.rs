//! Hostile samples (filled in below).
#![deny(missing_docs)]
