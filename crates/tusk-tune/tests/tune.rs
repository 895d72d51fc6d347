//! Integration tests for tusk-tune: one binary, a module per topic.

mod tune {
    pub mod pruner;
    pub mod sampler;
    pub mod space;
}
