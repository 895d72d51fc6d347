//! The checks every backend must pass, run by every rank of a group (threads, processes over
//! TCP, or `mpirun`). Each rank builds its inputs from its rank alone, checks its results
//! against an independent computation, and compares a digest of them with every other rank
//! (bitwise equality across ranks). Panics on the first failure, naming the check.

use crate::{Communicator, ReduceOp};

fn input(rank: usize, len: usize, salt: u64) -> Vec<f32> {
    // Values of mixed magnitude, so that the summation order matters in f32.
    (0..len)
        .map(|i| {
            let mut z = (i as u64 ^ (rank as u64) << 40 ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z ^= z >> 29;
            let unit = (z % 2_000_001) as f32 / 1_000_000.0 - 1.0;
            unit * [1e-3f32, 1.0, 1e3][i % 3]
        })
        .collect()
}

fn digest(v: &[f32]) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in v {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h.to_le_bytes().to_vec()
}

fn same_everywhere(comm: &mut dyn Communicator, what: &str, v: &[f32]) {
    let all = comm
        .all_gather(&digest(v))
        .unwrap_or_else(|e| panic!("{what}: all_gather of digests: {e}"));
    assert!(
        all.iter().all(|d| *d == all[0]),
        "{what}: rank {} holds different bytes from another rank",
        comm.rank()
    );
}

/// Run every check on this rank.
pub fn run(comm: &mut dyn Communicator) {
    let (r, n) = (comm.rank(), comm.world_size());
    // All-reduce: sizes below N, odd, and several segments per chunk.
    for (k, &len) in [0usize, 1, 3, 1000, 300_007].iter().enumerate() {
        for op in [ReduceOp::Sum, ReduceOp::Mean] {
            let what = format!("all_reduce {op:?} of {len} values on {n} ranks");
            let mut buf = input(r, len, k as u64);
            comm.all_reduce(&mut buf, op)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let inputs: Vec<Vec<f32>> = (0..n).map(|q| input(q, len, k as u64)).collect();
            for (i, got) in buf.iter().enumerate() {
                let mut want = 0f64;
                let mut scale = 0f64;
                for x in &inputs {
                    let x = f64::from(x[i]);
                    want += x;
                    scale += x.abs();
                }
                if op == ReduceOp::Mean {
                    want /= n as f64;
                    scale /= n as f64;
                }
                let err = (f64::from(*got) - want).abs();
                assert!(
                    err <= 1e-6 * scale.max(1e-30) * n as f64,
                    "{what}: element {i} is {got}, the exact value is {want}"
                );
            }
            same_everywhere(comm, &what, &buf);
        }
    }
    // Broadcast from every root, including an empty and a multi-segment payload.
    for root in 0..n {
        for len in [0usize, 5, 3 << 20] {
            let what = format!("broadcast of {len} bytes from rank {root}");
            let theirs: Vec<u8> = (0..len).map(|i| (i * 31 + root * 7) as u8).collect();
            let mut buf = if r == root {
                theirs.clone()
            } else {
                vec![9u8; 17]
            };
            comm.broadcast(&mut buf, root)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(buf == theirs, "{what}: rank {r} received other bytes");
        }
    }
    assert!(
        comm.broadcast(&mut Vec::new(), n).is_err(),
        "broadcast from a rank that does not exist must fail"
    );
    // All-gather of different lengths, one of them empty.
    let mine: Vec<u8> = (0..r * 1000 + 3 * (r % 2)).map(|i| (i + r) as u8).collect();
    let all = comm
        .all_gather(&mine)
        .unwrap_or_else(|e| panic!("all_gather: {e}"));
    assert_eq!(all.len(), n, "all_gather: one block per rank");
    for (q, block) in all.iter().enumerate() {
        let want: Vec<u8> = (0..q * 1000 + 3 * (q % 2)).map(|i| (i + q) as u8).collect();
        assert!(
            *block == want,
            "all_gather: rank {r} got a wrong block from rank {q}"
        );
    }
    comm.barrier().unwrap_or_else(|e| panic!("barrier: {e}"));
}
