//! The coder SDK and CLI.
