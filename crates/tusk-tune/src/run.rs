//! Placeholder: written separately.
