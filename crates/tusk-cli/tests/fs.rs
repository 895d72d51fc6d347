//! `tusk fs`: a directory copied local → S3 (a real S3-compatible server) → local comes back
//! byte for byte; ls, cat, rm; bad input gets one clear line.

use std::process::{Command, Output};

fn tusk(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[test]
fn copy_through_s3_and_back() {
    let Some(s3) = tusk_testkit::S3Server::start() else {
        return;
    };
    s3.create_bucket("tusk-fs");
    let env = s3.env();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut next = tusk_testkit::splitmix(7);
    let big: Vec<u8> = (0..(9 << 20) / 8)
        .flat_map(|_| next().to_le_bytes())
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("sub/small.txt"), b"hello").unwrap();

    let o = tusk(
        &["fs", "cp", src.to_str().unwrap(), "s3://tusk-fs/copy"],
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("copied 2 files"));

    let o = tusk(&["fs", "ls", "s3://tusk-fs/copy"], &env);
    let ls = String::from_utf8_lossy(&o.stdout);
    assert!(
        ls.contains(&format!("{}  s3://tusk-fs/copy/big.bin", big.len())),
        "{ls}"
    );
    assert!(ls.contains("5  s3://tusk-fs/copy/sub/small.txt"), "{ls}");

    let o = tusk(&["fs", "cat", "s3://tusk-fs/copy/sub/small.txt"], &env);
    assert_eq!(o.stdout, b"hello");

    let back = dir.path().join("back");
    let o = tusk(
        &["fs", "cp", "s3://tusk-fs/copy", back.to_str().unwrap()],
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(back.join("big.bin")).unwrap() == big);
    assert_eq!(std::fs::read(back.join("sub/small.txt")).unwrap(), b"hello");

    let o = tusk(&["fs", "rm", "-r", "s3://tusk-fs/copy"], &env);
    assert!(o.status.success());
    let o = tusk(&["fs", "ls", "s3://tusk-fs/copy"], &env);
    assert!(o.stdout.is_empty());

    // Bad input: one line naming what is wrong, a non-zero exit.
    for (args, needle) in [
        (
            vec!["fs", "cp", "s3://tusk-fs/nothing-here", "/tmp/x"],
            "s3://tusk-fs/nothing-here: no such file",
        ),
        (
            vec!["fs", "cat", "s3://no-such-bucket/x"],
            "the bucket or container 'no-such-bucket' does not exist",
        ),
        (vec!["fs", "rm", "s3://tusk-fs/absent"], "no such file"),
    ] {
        let o = tusk(&args, &env);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// Local to local (the kernel's copy): a directory comes back byte for byte, an existing file
/// is replaced, no hidden temporary file is left, and a missing source is one clear line.
#[test]
fn local_copy_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    let mut next = tusk_testkit::splitmix(3);
    let big: Vec<u8> = (0..(3 << 20) / 8)
        .flat_map(|_| next().to_le_bytes())
        .collect();
    std::fs::write(src.join("a/b/big.bin"), &big).unwrap();
    std::fs::write(src.join("top.txt"), b"new").unwrap();
    let dst = dir.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("top.txt"), b"old and longer").unwrap();
    let o = tusk(
        &["fs", "cp", src.to_str().unwrap(), dst.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(dst.join("a/b/big.bin")).unwrap() == big);
    assert_eq!(std::fs::read(dst.join("top.txt")).unwrap(), b"new");
    let mut names = Vec::new();
    for d in [dst.clone(), dst.join("a"), dst.join("a/b")] {
        for e in std::fs::read_dir(d).unwrap() {
            names.push(e.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    assert_eq!(names, ["a", "b", "big.bin", "top.txt"]);
    let missing = dir.path().join("nope.bin");
    let o = tusk(
        &["fs", "cp", missing.to_str().unwrap(), dst.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("nope.bin"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
