//! SQL feature pipelines (in progress).
