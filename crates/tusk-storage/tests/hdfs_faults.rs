//! HDFS under faults, on a real MiniDFSCluster with 3 DataNodes, replication 3 and 1 MiB
//! blocks: corrupt replicas on disk, and a DataNode stopped while a multi-block file is being
//! written. The NameNode declares a stopped DataNode dead only after HDFS's default 10 minutes,
//! as on a real cluster: until then it keeps placing new blocks on it, and the writer has to
//! route around it on its own. (NameNode restarts and HA failover are tested through the `tusk` binary in
//! `tusk-cli/tests/hdfs_faults.rs`.)

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use tusk_storage::Storage;
use tusk_testkit::{MiniDfs, MiniDfsOptions};

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut next = tusk_testkit::splitmix(seed);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&next().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Every object under `dir` on the store, hidden temporaries included.
fn all_objects(storage: &Storage, url: &str) -> Vec<String> {
    let (store, path) = storage.open(url).unwrap().object_store();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut names: Vec<String> = rt
        .block_on(store.list(Some(&path)).try_collect::<Vec<_>>())
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn corrupt_replicas_and_a_datanode_lost_mid_write() {
    let Some(mut dfs) = MiniDfs::start_with(MiniDfsOptions {
        data_nodes: 3,
        slow_dead: true,
        ..Default::default()
    }) else {
        return;
    };
    let storage = Storage::new().unwrap();
    let base = format!("{}/faults", dfs.hdfs_url());

    // One corrupt replica of every block: reads verify HDFS's checksums and take another
    // replica, so the bytes are right every time.
    let data = bytes(3 << 20, 1);
    let one = storage.open(&format!("{base}/one-bad.bin")).unwrap();
    one.write(data.clone()).unwrap();
    let holders = dfs.command("datanodes /faults/one-bad.bin");
    assert_eq!(holders.split_whitespace().count(), 3, "replicas: {holders}");
    let flipped = dfs.command("corrupt /faults/one-bad.bin 0");
    assert_eq!(flipped, "3", "one replica of each of the 3 blocks");
    for _ in 0..6 {
        assert!(
            one.read().unwrap() == data,
            "wrong bytes from a corrupt replica"
        );
        let mut streamed = Vec::new();
        std::io::copy(&mut one.reader().unwrap(), &mut streamed).unwrap();
        assert!(
            streamed == data,
            "wrong bytes streamed from a corrupt replica"
        );
        assert_eq!(
            &one.read_range(1_500_000..1_600_000).unwrap()[..],
            &data[1_500_000..1_600_000]
        );
    }

    // Every replica corrupt: an error naming the file and the checksum, never wrong bytes.
    let all = storage.open(&format!("{base}/all-bad.bin")).unwrap();
    all.write(bytes(2 << 20, 2)).unwrap();
    dfs.command("corrupt /faults/all-bad.bin all");
    let err = all
        .read()
        .expect_err("a file with no good replica was read");
    let text = format!("{err}");
    assert!(text.contains("all-bad.bin"), "{text}");
    assert!(
        text.to_lowercase().contains("checksum"),
        "the error should say the checksums failed: {text}"
    );
    let mut sink = Vec::new();
    let streamed = std::io::copy(&mut all.reader().unwrap(), &mut sink);
    let text = format!(
        "{}",
        streamed.expect_err("streamed a file with no good replica")
    );
    assert!(text.contains("all-bad.bin"), "{text}");

    // A DataNode stopped while a 24-block file is being written: the write completes (the
    // pipeline goes on without it, and each later block the NameNode places on it is abandoned
    // and asked for again without it) and the bytes read back are identical; no temporary is
    // left behind. Replication equals the number of DataNodes, so every block lands on the
    // stopped one until the writer excludes it.
    let data = Arc::new(bytes(24 << 20, 3));
    let handed = Arc::new(AtomicU64::new(0));
    let url = format!("{base}/big/survivor.bin");
    let writer = {
        let (storage, data, handed, url) = (storage.clone(), data.clone(), handed.clone(), url);
        std::thread::spawn(move || {
            let mut w = storage.open(&url).unwrap().writer().unwrap();
            for chunk in data.chunks(256 << 10) {
                w.write_all(chunk)?;
                handed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            w.finish().map_err(std::io::Error::other)
        })
    };
    let t0 = Instant::now();
    while handed.load(Ordering::SeqCst) < 10 << 20 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the write stalled");
        assert!(!writer.is_finished(), "the writer ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    dfs.command("stop-datanode 0");
    let t_stop = Instant::now();
    writer
        .join()
        .unwrap()
        .expect("the write did not survive a DataNode");
    eprintln!(
        "write finished {:.1} s after DataNode 0 stopped",
        t_stop.elapsed().as_secs_f64()
    );
    let back = storage.open(&format!("{base}/big/survivor.bin")).unwrap();
    assert_eq!(back.head().unwrap().size, data.len() as u64);
    assert!(
        back.read().unwrap() == data[..],
        "bytes differ after the fault"
    );
    assert_eq!(
        all_objects(&storage, &format!("{base}/big")),
        vec!["faults/big/survivor.bin".to_string()]
    );

    // And writing goes on with one DataNode fewer, which the NameNode still counts as live.
    let after = storage.open(&format!("{base}/after.bin")).unwrap();
    let more = bytes(5 << 20, 4);
    after.write(more.clone()).unwrap();
    assert!(after.read().unwrap() == more);
}
