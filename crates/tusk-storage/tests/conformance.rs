//! One storage conformance suite, run unchanged against every backend: local, memory, and a
//! real MiniDFSCluster over both hdfs:// (native RPC) and webhdfs://, and a real S3-compatible
//! server (moto) over s3://.

use std::io::{Read, Write};

use tusk_storage::{Error, Location, Storage};

/// Everything tusk relies on from a backend. `base` must be an empty directory.
fn conformance(storage: &Storage, base: &Location) {
    let url = base.url();
    // --- whole-file write/read, exists, head
    let a = base.join("a.txt");
    assert!(!a.exists().unwrap(), "{url}: fresh base must be empty");
    a.write(&b"hello"[..]).unwrap();
    assert!(a.exists().unwrap());
    assert_eq!(&a.read().unwrap()[..], b"hello");
    assert_eq!(a.head().unwrap().size, 5);
    // overwrite replaces
    a.write(&b"hello, world"[..]).unwrap();
    assert_eq!(&a.read().unwrap()[..], b"hello, world");
    // empty file
    let empty = base.join("empty.bin");
    empty.write(Vec::new()).unwrap();
    assert_eq!(empty.head().unwrap().size, 0);
    assert!(empty.read().unwrap().is_empty());

    // --- ranged reads
    assert_eq!(&a.read_range(7..12).unwrap()[..], b"world");
    assert_eq!(&a.read_range(0..1).unwrap()[..], b"h");

    // --- streaming write + read of a file bigger than one upload part (8 MiB)
    let big = base.join("nested/deeper/big.bin");
    let pattern: Vec<u8> = (0..(9 << 20) + 12_345u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut w = big.writer().unwrap();
    for chunk in pattern.chunks(1 << 20) {
        w.write_all(chunk).unwrap();
    }
    // not visible before finish
    assert!(
        !big.exists().unwrap(),
        "{url}: streaming write visible before finish"
    );
    w.finish().unwrap();
    assert_eq!(big.head().unwrap().size, pattern.len() as u64);
    let mut back = Vec::new();
    big.reader().unwrap().read_to_end(&mut back).unwrap();
    assert!(back == pattern, "{url}: streamed content differs");

    // --- an abandoned writer leaves nothing behind
    let abandoned = base.join("abandoned.bin");
    {
        let mut w = abandoned.writer().unwrap();
        w.write_all(b"partial").unwrap();
    }
    assert!(
        !abandoned.exists().unwrap(),
        "{url}: dropped writer published data"
    );

    // --- create-only writes: the commit primitive
    let manifest = base.join("_manifest.json");
    manifest.write_new(&b"{}"[..]).unwrap();
    match manifest.write_new(&b"{\"x\":1}"[..]) {
        Err(Error::AlreadyExists { url: u }) => assert!(u.ends_with("_manifest.json"), "{u}"),
        other => panic!("{url}: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        &manifest.read().unwrap()[..],
        b"{}",
        "{url}: create-only write clobbered"
    );

    // --- listing: recursive, sorted, hidden temporaries excluded, no leftovers
    let listed: Vec<String> = base
        .list()
        .unwrap()
        .iter()
        .map(|e| e.location.relative_to(base))
        .collect();
    assert_eq!(
        listed,
        vec![
            "_manifest.json",
            "a.txt",
            "empty.bin",
            "nested/deeper/big.bin"
        ],
        "{url}: listing"
    );
    let sizes: u64 = base.list().unwrap().iter().map(|e| e.size).sum();
    assert_eq!(sizes, 2 + 12 + pattern.len() as u64);
    // a missing directory lists as empty
    assert!(base.join("no/such/dir").list().unwrap().is_empty());
    // one level: files and subdirectories by name
    assert_eq!(
        base.list_names().unwrap(),
        ["_manifest.json", "a.txt", "empty.bin", "nested"],
        "{url}: list_names"
    );
    assert_eq!(base.join("nested").list_names().unwrap(), ["deeper"]);
    assert!(base.join("no/such/dir").list_names().unwrap().is_empty());

    // --- glob
    let globbed: Vec<String> = storage
        .glob(&format!("{url}/*.txt"))
        .unwrap()
        .iter()
        .map(|l| l.file_name().to_string())
        .collect();
    assert_eq!(globbed, vec!["a.txt"], "{url}: glob *.txt");
    let deep = storage.glob(&format!("{url}/**/*.bin")).unwrap();
    assert_eq!(
        deep.len(),
        2,
        "{url}: glob **/*.bin (** matches zero or more directories): {deep:?}"
    );
    let parts = storage.glob(&format!("{url}/{{a,empty}}.*")).unwrap();
    assert_eq!(parts.len(), 2);

    // --- missing files: clear NotFound naming the URL
    let missing = base.join("missing.bin");
    for err in [
        missing.read().unwrap_err(),
        missing.reader().map(|_| ()).unwrap_err(),
        missing.head().unwrap_err(),
    ] {
        match &err {
            Error::NotFound { url: u } => assert!(u.ends_with("missing.bin"), "{u}"),
            other => panic!("{url}: expected NotFound, got {other:?}"),
        }
        assert!(err.to_string().contains("missing.bin"), "{err}");
    }
    // --- delete (missing is fine), delete_all
    a.delete().unwrap();
    assert!(!a.exists().unwrap());
    a.delete().unwrap();
    assert_eq!(base.delete_all().unwrap(), 3);
    assert!(
        base.list().unwrap().is_empty(),
        "{url}: delete_all left files"
    );
    // ... and no tree of empty directories (local disks and HDFS have them)
    assert!(
        !base
            .parent()
            .list_names()
            .unwrap()
            .contains(&base.file_name().to_string()),
        "{url}: delete_all left the directories"
    );

    // --- exclusive rename: of racing renames onto one name exactly one wins, whole
    let link = base.join("v/000001/NEXT");
    let srcs: Vec<Location> = (0..4)
        .map(|i| {
            let s = base.join(&format!("v/{:06}/link", i + 2));
            s.write(format!("{{\"version\":{}}}", i + 2)).unwrap();
            s
        })
        .collect();
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = srcs
            .iter()
            .map(|s| {
                let link = link.clone();
                sc.spawn(move || s.rename_new(&link))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<usize> = (0..4).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(won.len(), 1, "{url}: {results:?}");
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::AlreadyExists { .. }),
                "{url}: loser {i}: {e:?}"
            );
            assert!(
                srcs[i].exists().unwrap(),
                "{url}: a losing rename lost its source"
            );
        }
    }
    assert!(
        !srcs[won[0]].exists().unwrap(),
        "{url}: renamed file still there"
    );
    assert_eq!(
        link.read().unwrap(),
        format!("{{\"version\":{}}}", won[0] + 2).as_bytes(),
        "{url}: link content"
    );
    base.delete_all().unwrap();
}

#[test]
fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let base = storage.open(dir.path().to_str().unwrap()).unwrap();
    conformance(&storage, &base);
    // file:// names the same place
    let again = storage
        .open(&format!("file://{}/x", dir.path().display()))
        .unwrap();
    again.write(&b"1"[..]).unwrap();
    assert!(dir.path().join("x").is_file());
    // no temporary files are left next to targets
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().starts_with('.')),
        "{names:?}"
    );
}

#[test]
fn memory() {
    let storage = Storage::new().unwrap();
    let base = storage.open("memory://conformance/base").unwrap();
    conformance(&storage, &base);
    // the same name is the same store within one Storage
    storage
        .open("memory://m/x")
        .unwrap()
        .write(&b"1"[..])
        .unwrap();
    assert!(storage.open("memory://m/x").unwrap().exists().unwrap());
}

#[test]
fn unreachable_namenode_is_a_clear_error() {
    let storage = Storage::new().unwrap();
    for url in ["hdfs://127.0.0.1:1/x", "webhdfs://127.0.0.1:1/x"] {
        let err = match storage.open(url) {
            Ok(loc) => loc.read().unwrap_err(),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(matches!(err, Error::Unreachable { .. }), "{url}: {err:?}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(text.starts_with("cannot reach"), "{text}");
    }
}

/// A real HDFS: Hadoop's MiniDFSCluster, over native RPC and WebHDFS.
#[test]
fn hdfs_and_webhdfs_on_minidfs() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let storage = Storage::new().unwrap();
    let base = storage
        .open(&format!("{}/conformance/native", dfs.hdfs_url()))
        .unwrap();
    conformance(&storage, &base);
    let web = storage
        .open(&format!("{}/conformance/web", dfs.webhdfs_url()))
        .unwrap();
    conformance(&storage, &web);
    // Both protocols see the same filesystem.
    storage
        .open(&format!("{}/shared/f.txt", dfs.hdfs_url()))
        .unwrap()
        .write(&b"via rpc"[..])
        .unwrap();
    let via_web = storage
        .open(&format!("{}/shared/f.txt", dfs.webhdfs_url()))
        .unwrap();
    assert_eq!(&via_web.read().unwrap()[..], b"via rpc");
}

/// S3 against a real S3-compatible server (moto): the same suite (create-only writes by
/// conditional put, exclusive renames by a multipart copy completed with If-None-Match), then
/// bad input: a missing bucket, an endpoint that is down.
#[test]
fn s3_on_a_real_server() {
    let Some(mut s3) = tusk_testkit::S3Server::start() else {
        return;
    };
    s3.create_bucket("tusk-conformance");
    let storage = Storage::with_options(s3.env()).unwrap();
    let base = storage.open("s3://tusk-conformance/base").unwrap();
    conformance(&storage, &base);

    // A bucket that does not exist: one error naming it.
    let err = storage
        .open("s3://no-such-bucket/x.bin")
        .unwrap()
        .write(&b"1"[..])
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("s3://no-such-bucket/x.bin"), "{text}");
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err:?}");
    assert!(
        text.contains("the bucket or container 'no-such-bucket' does not exist"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");

    // The endpoint down: a clear "cannot reach", after a short retry budget.
    let mut opts = s3.env();
    opts.push(("TUSK_STORAGE_RETRY_SECS".into(), "2".into()));
    let quick = Storage::with_options(opts).unwrap();
    let f = quick.open("s3://tusk-conformance/base/x.bin").unwrap();
    s3.stop();
    let t0 = std::time::Instant::now();
    let err = f.read().unwrap_err();
    assert!(t0.elapsed().as_secs() < 30, "took {:?}", t0.elapsed());
    let text = err.to_string();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        text.contains("S3 bucket tusk-conformance at http://127.0.0.1:"),
        "{text}"
    );
}

/// Azure Blob (`az://` and `abfs://`) against Azurite, Microsoft's emulator, with shared-key
/// authentication: the same suite, then a missing container and an endpoint that is down.
#[test]
fn azure_on_azurite() {
    let Some(mut az) = tusk_testkit::Azurite::start() else {
        return;
    };
    az.create_container("tusk-conformance");
    let storage = Storage::with_options(az.env()).unwrap();
    let base = storage.open("az://tusk-conformance/base").unwrap();
    conformance(&storage, &base);
    // Hadoop's ABFS form names the same place.
    storage
        .open("az://tusk-conformance/shared.txt")
        .unwrap()
        .write(&b"via az"[..])
        .unwrap();
    let abfs = storage
        .open("abfs://tusk-conformance@devstoreaccount1.dfs.core.windows.net/shared.txt")
        .unwrap();
    assert_eq!(&abfs.read().unwrap()[..], b"via az");

    let err = storage
        .open("az://no-such-bucket/x.bin")
        .unwrap()
        .write(&b"1"[..])
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err:?}");
    assert!(
        text.contains("the bucket or container 'no-such-bucket' does not exist"),
        "{text}"
    );

    // A wrong account key: one line saying the credentials were refused.
    let wrong: Vec<(String, String)> = az
        .env()
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "AZURE_STORAGE_ACCOUNT_KEY" {
                "d3Jvbmcga2V5IGZvciBhIHRlc3Q=".to_string()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    let err = Storage::with_options(wrong)
        .unwrap()
        .open("az://tusk-conformance/shared.txt")
        .unwrap()
        .read()
        .unwrap_err();
    assert!(matches!(err, Error::Credentials { .. }), "{err:?}");
    assert!(err.to_string().contains("refused the credentials"), "{err}");

    let mut opts = az.env();
    opts.push(("TUSK_STORAGE_RETRY_SECS".into(), "2".into()));
    let quick = Storage::with_options(opts).unwrap();
    let f = quick.open("az://tusk-conformance/shared.txt").unwrap();
    az.stop();
    let t0 = std::time::Instant::now();
    let err = f.read().unwrap_err();
    assert!(t0.elapsed().as_secs() < 30, "took {:?}", t0.elapsed());
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("Azure container tusk-conformance at http://127.0.0.1:"),
        "{err}"
    );
}
