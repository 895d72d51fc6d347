//! Synthetic data generators (in progress).
