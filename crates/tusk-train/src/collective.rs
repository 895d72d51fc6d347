//! Data-parallel collectives (crate `tusk-collective`): the training loop sums its dense
//! gradient with [`Communicator::all_reduce`] after every backward pass and all-gathers the
//! embedding rows' gradients. [`Single`] is one process.

pub use tusk_collective::{Communicator, ReduceOp, Single};

use std::collections::BTreeMap;

use crate::config::Config;

/// Flatten the resolved config into `section.key` → value pairs (what ranks compare).
pub fn config_fingerprint(cfg: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(v) = cfg.to_toml().parse::<toml::Table>() {
        flatten("", &toml::Value::Table(v), &mut out);
    }
    out
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}
