//! Shared helpers live in `tests/*.rs` files; this crate only hosts the integration tests.
