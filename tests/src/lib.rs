//! End-to-end tests that start real processes. See `tests/` beside this file.
