//! Helpers live in the test files; this crate only hosts `tests/*.rs`.
