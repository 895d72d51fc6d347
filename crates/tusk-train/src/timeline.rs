//! `--timeline FILE`: what every rank did when, as a Chrome/Perfetto trace (Trace Event
//! JSON, object form `{"traceEvents": […]}`), one process per rank with two tracks: compute
//! (thread 0) and the dense all-reduce (thread 1), which overlaps the backward pass. Activities take Horovod's
//! names where one fits: READ_BATCH (waiting for the input pipeline), FORWARD_BACKWARD,
//! ALLREDUCE (dense gradients), SPARSE_ALLGATHER (embedding-row gradients), ALLGATHER (both
//! at once, for dense gradients small enough to fuse), OPTIMIZER, CHECKPOINT, EVALUATE.
//!
//! Events are kept in memory (13 bytes each, at most [`MAX_EVENTS`] per rank) and gathered
//! to rank 0 when training ends, which writes the file to any storage URL. Timestamps are
//! wall-clock microseconds, so tracks of different hosts line up as well as their clocks do.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Events recorded per rank before recording stops (about 13 MB).
pub const MAX_EVENTS: usize = 1_000_000;

/// The activities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Activity {
    /// Waiting for the next batch.
    ReadBatch = 0,
    /// Embedding lookup, forward and backward pass.
    ForwardBackward = 1,
    /// Dense-gradient all-reduce.
    AllReduce = 2,
    /// Embedding-gradient all-gather.
    SparseAllGather = 3,
    /// Dense Adam and row-wise optimiser steps.
    Optimizer = 4,
    /// Encoding a version (and comparing replicas).
    Checkpoint = 5,
    /// Evaluation after an epoch.
    Evaluate = 6,
    /// A small dense gradient and the row gradients in one all-gather.
    AllGather = 7,
}

const NAMES: [&str; 8] = [
    "READ_BATCH",
    "FORWARD_BACKWARD",
    "ALLREDUCE",
    "SPARSE_ALLGATHER",
    "OPTIMIZER",
    "CHECKPOINT",
    "EVALUATE",
    "ALLGATHER",
];

/// One rank's recorder; a disabled one costs a branch per span.
pub struct Timeline {
    enabled: bool,
    origin: Instant,
    origin_unix_us: u64,
    events: Vec<u8>,
    dropped: u64,
}

impl Timeline {
    /// A recorder (`enabled = false`: records nothing).
    pub fn new(enabled: bool) -> Timeline {
        Timeline {
            enabled,
            origin: Instant::now(),
            origin_unix_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            events: Vec::new(),
            dropped: 0,
        }
    }

    /// Whether spans are recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Record `what` from `start` until now.
    pub fn span(&mut self, what: Activity, start: Instant) {
        self.span_until(what, start, Instant::now());
    }

    /// Record `what` from `start` until `end`.
    pub fn span_until(&mut self, what: Activity, start: Instant, end: Instant) {
        if !self.enabled {
            return;
        }
        if self.events.len() >= MAX_EVENTS * 13 {
            self.dropped += 1;
            return;
        }
        let ts =
            start.saturating_duration_since(self.origin).as_micros() as u64 + self.origin_unix_us;
        let dur = end
            .saturating_duration_since(start)
            .as_micros()
            .min(u128::from(u32::MAX)) as u32;
        self.events.push(what as u8);
        self.events.extend_from_slice(&ts.to_le_bytes());
        self.events.extend_from_slice(&dur.to_le_bytes());
    }

    /// The recorded events, to gather: `[dropped u64][(kind u8, ts u64, dur u32)…]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.dropped.to_le_bytes().to_vec();
        out.extend_from_slice(&self.events);
        out
    }
}

/// The trace file from every rank's [`Timeline::encode`], indexed by rank.
pub fn render(ranks: &[Vec<u8>]) -> String {
    let mut out = String::from("{\"traceEvents\": [\n");
    let mut first = true;
    let mut push = |line: String, out: &mut String| {
        if !first {
            out.push_str(",\n");
        }
        first = false;
        out.push_str(&line);
    };
    for (rank, block) in ranks.iter().enumerate() {
        push(
            format!(
                "{{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": {rank}, \"args\": {{\"name\": \"rank {rank}\"}}}}"
            ),
            &mut out,
        );
        push(
            format!(
                "{{\"name\": \"process_sort_index\", \"ph\": \"M\", \"pid\": {rank}, \"args\": {{\"sort_index\": {rank}}}}}"
            ),
            &mut out,
        );
        for (tid, name) in [(0, "compute"), (1, "dense all-reduce")] {
            push(
                format!(
                    "{{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": {rank}, \"tid\": {tid}, \"args\": {{\"name\": \"{name}\"}}}}"
                ),
                &mut out,
            );
        }
        let dropped = block
            .get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        if dropped > 0 {
            push(
                format!(
                    "{{\"name\": \"events_dropped\", \"ph\": \"M\", \"pid\": {rank}, \"args\": {{\"count\": {dropped}}}}}"
                ),
                &mut out,
            );
        }
        for e in block.get(8..).unwrap_or_default().chunks_exact(13) {
            let name = NAMES.get(usize::from(e[0])).copied().unwrap_or("UNKNOWN");
            let ts = u64::from_le_bytes(e[1..9].try_into().unwrap_or([0; 8]));
            let dur = u32::from_le_bytes(e[9..13].try_into().unwrap_or([0; 4]));
            // Dense all-reduces overlap the backward pass: they get a track of their own.
            let tid = u8::from(e[0] == Activity::AllReduce as u8);
            push(
                format!(
                    "{{\"name\": \"{name}\", \"ph\": \"X\", \"pid\": {rank}, \"tid\": {tid}, \"ts\": {ts}, \"dur\": {dur}}}"
                ),
                &mut out,
            );
        }
    }
    out.push_str("\n], \"displayTimeUnit\": \"ms\"}\n");
    out
}
