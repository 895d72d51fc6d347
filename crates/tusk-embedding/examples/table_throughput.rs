//! Lookups + Adam updates per second of the in-process `HashedTable` against a memory bound
//! measured in the same run: `cargo run --release -p tusk-embedding --example table_throughput`.
//!
//! The table holds 1M rows of dimension 32 (created before timing); each step looks up a
//! batch of distinct random keys and applies one gradient row per key (lazy Adam). The bound
//! moves the same bytes with no index and no arithmetic: per row, a gather of its values into
//! the output, and a read and write of its values and both Adam moments, at the same random
//! rows.

use std::time::Instant;

use tusk_embedding::{EmbeddingStore, HashedTable, Optimizer, feature_key};

const DIM: usize = 32;
const IDS: u64 = 1 << 20;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `steps` batches of `batch` distinct ids each.
fn batches(steps: usize, batch: usize, seed: u64) -> Vec<Vec<u64>> {
    let mut s = seed;
    (0..steps)
        .map(|_| {
            let mut ids: Vec<u64> = (0..batch * 2)
                .map(|_| {
                    s = mix(s);
                    s % IDS
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.truncate(batch);
            ids
        })
        .collect()
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3.0);
    println!("| keys/step | table rows/s | bound rows/s | table ÷ bound |");
    println!("|---:|---:|---:|---:|");
    for batch in [512usize, 4096, 32768] {
        let mut table = HashedTable::new(DIM, Optimizer::adam(0.01), 1);
        let all: Vec<u64> = (0..IDS as i64).map(|i| feature_key("id", i)).collect();
        let mut out = vec![0.0f32; all.len().min(1 << 16) * DIM];
        for chunk in all.chunks(1 << 16) {
            table.lookup(chunk, &mut out[..chunk.len() * DIM]);
        }
        let steps = batches(64, batch, batch as u64);
        let keys: Vec<Vec<u64>> = steps
            .iter()
            .map(|b| b.iter().map(|&i| all[i as usize]).collect())
            .collect();
        let mut out = vec![0.0f32; batch * DIM];
        let grads: Vec<f32> = (0..batch * DIM)
            .map(|i| ((i % 7) as f32 - 3.0) * 1e-3)
            .collect();

        let t = Instant::now();
        let mut rows = 0usize;
        while t.elapsed().as_secs_f64() < seconds {
            for k in &keys {
                table.lookup(k, &mut out[..k.len() * DIM]);
                table
                    .apply_gradients(k, &grads[..k.len() * DIM])
                    .expect("gradient shape");
                rows += k.len();
            }
        }
        let table_rate = rows as f64 / t.elapsed().as_secs_f64();
        drop(table);

        // The bound: the same rows' bytes (values, m, v), gathered and written back.
        let mut values = vec![0.5f32; IDS as usize * DIM];
        let mut state = vec![0.0f32; IDS as usize * DIM * 2];
        let t = Instant::now();
        let mut rows = 0usize;
        while t.elapsed().as_secs_f64() < seconds {
            for b in &steps {
                for (j, &r) in b.iter().enumerate() {
                    let r = r as usize;
                    out[j * DIM..(j + 1) * DIM].copy_from_slice(&values[r * DIM..(r + 1) * DIM]);
                }
                for (j, &r) in b.iter().enumerate() {
                    let r = r as usize;
                    let g = &grads[j * DIM..(j + 1) * DIM];
                    let st = &mut state[r * 2 * DIM..(r + 1) * 2 * DIM];
                    let w = &mut values[r * DIM..(r + 1) * DIM];
                    for i in 0..DIM {
                        st[i] += g[i];
                        st[DIM + i] += g[i];
                        w[i] -= g[i];
                    }
                }
                rows += b.len();
            }
        }
        let bound_rate = rows as f64 / t.elapsed().as_secs_f64();
        std::hint::black_box(&values);
        println!(
            "| {batch} | {:.2} M | {:.2} M | {:.0}% |",
            table_rate / 1e6,
            bound_rate / 1e6,
            100.0 * table_rate / bound_rate
        );
    }
}
