//! coderd.
