//! Dense-gradient averaging across data-parallel workers.
//!
//! The training loop averages its dense gradient through [`Collective`] after every
//! backward pass: `ḡ = 1/N Σᵢ gᵢ`. Here there is one process ([`Local`], a no-op); the
//! distributed issue supplies a ring all-reduce over sockets behind the same trait.

use crate::error::Result;

/// Averaging of a flat gradient buffer across workers.
pub trait Collective {
    /// Number of workers.
    fn world_size(&self) -> usize;
    /// This worker's rank, `0..world_size`.
    fn rank(&self) -> usize;
    /// Replace `buf` by the element-wise mean of every worker's `buf`.
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<()>;
}

/// One process: averaging over one worker leaves the buffer as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Collective for Local {
    fn world_size(&self) -> usize {
        1
    }

    fn rank(&self) -> usize {
        0
    }

    fn all_reduce_mean(&mut self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
}
