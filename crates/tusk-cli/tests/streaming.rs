//! The image commands as a user runs them: `tusk images normalize` and `tusk mapper
//! normalize-images` as processes, and the mapper inside a real Hadoop Streaming job
//! (`org.apache.hadoop.streaming.StreamJob` from Maven Central, local job runner) reading its
//! input from and writing its output to a real HDFS (MiniDFSCluster).
//!
//! Test images are written by a small PNG encoder in this file (stored deflate blocks), and
//! expected values are computed here from the known pixels, so nothing is checked against the
//! code under test.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tusk_records::dataset::{Input, Manifest};
use tusk_records::example::Kind;
use tusk_storage::Storage;

fn tusk(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tusk");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for tusk");
    feeder.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---- an independent PNG encoder (8-bit RGB, no compression) --------------------------------

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// A PNG of `w`×`h` RGB pixels, row-major.
fn png(w: u32, h: u32, pixels: &[[u8; 3]]) -> Vec<u8> {
    assert_eq!(pixels.len(), (w * h) as usize);
    let mut raw = Vec::new();
    for row in pixels.chunks(w as usize) {
        raw.push(0); // filter: none
        raw.extend(row.iter().flatten());
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push((i + 1 == blocks.len()) as u8); // BFINAL, BTYPE=00 (stored)
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    zlib.extend(adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not standard base64: {c:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A test image: size, pixels, and its PNG.
struct TestImage {
    w: u32,
    h: u32,
    pixels: Vec<[u8; 3]>,
    bytes: Vec<u8>,
}

fn test_image(seed: u32, w: u32, h: u32) -> TestImage {
    let pixels: Vec<[u8; 3]> = (0..w * h)
        .map(|i| {
            let v = i * 37 + seed * 101;
            [
                (v % 256) as u8,
                ((v * 7 + 3) % 256) as u8,
                ((v * 13 + seed) % 256) as u8,
            ]
        })
        .collect();
    let bytes = png(w, h, &pixels);
    TestImage {
        w,
        h,
        pixels,
        bytes,
    }
}

/// Expected C×H×W floats: (p/255 − mean[c]) / std[c], in f64.
fn expected(img: &TestImage, mean: [f64; 3], std: [f64; 3]) -> Vec<f64> {
    (0..3)
        .flat_map(|c| {
            img.pixels
                .iter()
                .map(move |p| (p[c] as f64 / 255.0 - mean[c]) / std[c])
        })
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: value count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() < 1e-5,
            "{what}: value {i} is {g}, expected {w}"
        );
    }
}

/// Floats of one mapper output line `url<TAB>base64`.
fn parse_line(line: &str) -> (String, Vec<f32>) {
    let (url, b64) = line
        .split_once('\t')
        .unwrap_or_else(|| panic!("no TAB in mapper line: {line}"));
    let raw = b64_decode(b64);
    assert_eq!(raw.len() % 4, 0);
    let floats = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (url.to_string(), floats)
}

const MEAN: [f64; 3] = [0.5, 0.5, 0.5];
const STD: [f64; 3] = [0.25, 0.5, 1.0];
const MEAN_ARG: &str = "0.5,0.5,0.5";
const STD_ARG: &str = "0.25,0.5,1";

// ---- local runs of the binary ----------------------------------------------------------------

fn local_images(dir: &Path) -> Vec<(String, TestImage)> {
    let imgs = [(1, 3, 2), (2, 4, 4), (3, 1, 5)];
    let mut out = Vec::new();
    for (seed, w, h) in imgs {
        let img = test_image(seed, w, h);
        let p = dir.join(format!("img-{seed}.png"));
        std::fs::write(&p, &img.bytes).unwrap();
        out.push((p.to_string_lossy().into_owned(), img));
    }
    std::fs::write(dir.join("img-2b-broken.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    out
}

#[test]
fn normalize_writes_a_dataset_and_reports_corrupt_images() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let good = local_images(&input);
    let broken = input
        .join("img-2b-broken.png")
        .to_string_lossy()
        .into_owned();
    let out_dir = tmp.path().join("ds").to_string_lossy().into_owned();
    let in_dir = input.to_string_lossy().into_owned();

    let o = tusk(
        &[
            "images",
            "normalize",
            "--input",
            &in_dir,
            "--output",
            &out_dir,
            "--mean",
            MEAN_ARG,
            "--std",
            STD_ARG,
            "--shards",
            "2",
        ],
        b"",
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: ") && l.contains(&broken)),
        "corrupt image not reported by path: {err}"
    );
    assert!(
        err.contains("wrote 3 images") && err.contains("skipped 1 corrupt"),
        "{err}"
    );

    let storage = Storage::new().unwrap();
    let m = Manifest::load(&storage.open(&out_dir).unwrap()).unwrap();
    assert_eq!((m.records, m.shards.len()), (3, 2));
    let mut seen = Vec::new();
    Input::open(&storage, &out_dir, None)
        .unwrap()
        .for_each_example(|ex, _| {
            seen.push(ex);
            Ok(true)
        })
        .unwrap();
    assert_eq!(seen.len(), 3);
    for (ex, (path, img)) in seen.iter().zip(&good) {
        let f = &ex.features.as_ref().unwrap().feature;
        let kind = |n: &str| f[n].kind.clone().unwrap();
        assert_eq!(
            kind("path"),
            Kind::BytesList(tusk_records::example::BytesList {
                value: vec![path.as_bytes().to_vec()]
            })
        );
        let Kind::Int64List(shape) = kind("shape") else {
            panic!("shape")
        };
        assert_eq!(shape.value, [3, img.h as i64, img.w as i64]);
        let Kind::FloatList(v) = kind("image") else {
            panic!("image")
        };
        assert_close(path, &v.value, &expected(img, MEAN, STD));
    }

    // --strict: one error line naming the file, exit 1, no dataset.
    let strict_out = tmp.path().join("strict").to_string_lossy().into_owned();
    let o = tusk(
        &[
            "images",
            "normalize",
            "--input",
            &in_dir,
            "--output",
            &strict_out,
            "--strict",
        ],
        b"",
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains(&broken),
        "{err}"
    );
    assert!(!Path::new(&strict_out).join("_manifest.json").exists());
}

#[test]
fn bad_flags_name_the_flag() {
    for (flag, value, needle) in [
        ("--mean", "1,2", "three comma-separated numbers"),
        ("--mean", "1,x,3", "not a number"),
        ("--std", "1,0,1", "greater than 0"),
        ("--size", "224", "WIDTHxHEIGHT"),
        ("--shards", "0", "0"),
    ] {
        let o = tusk(
            &[
                "images",
                "normalize",
                "--input",
                "x",
                "--output",
                "y",
                flag,
                value,
            ],
            b"",
        );
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(flag) && err.contains(needle),
            "{flag} {value}: {err}"
        );
    }
    let o = tusk(&["mapper", "normalize-images", "--mean", "1,2"], b"");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--mean"), "{err}");
    // Negative means are values, not flags.
    let o = tusk(&["mapper", "normalize-images", "--mean", "-0.5,0,0"], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn mapper_streams_lines_and_counts_corrupt_images() {
    let tmp = tempfile::tempdir().unwrap();
    let good = local_images(tmp.path());
    let broken = tmp
        .path()
        .join("img-2b-broken.png")
        .to_string_lossy()
        .into_owned();
    let stdin = format!(
        "{}\n\n42\t{}\n{broken}\nsome\tkey\t{}",
        good[0].0, good[1].0, good[2].0
    );
    let args = [
        "mapper",
        "normalize-images",
        "--mean",
        MEAN_ARG,
        "--std",
        STD_ARG,
    ];
    let o = tusk(&args, stdin.as_bytes());
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, (path, img)) in lines.iter().zip(&good) {
        let (url, floats) = parse_line(line);
        assert_eq!(&url, path);
        assert_close(path, &floats, &expected(img, MEAN, STD));
    }
    let counters: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("reporter:counter:"))
        .collect();
    assert_eq!(
        counters,
        [
            "reporter:counter:tusk,corrupt_images,1",
            "reporter:counter:tusk,images,3"
        ],
        "{err}"
    );
    assert!(err.contains(&broken), "{err}");

    let strict: Vec<&str> = args.iter().copied().chain(["--strict"]).collect();
    let o = tusk(&strict, stdin.as_bytes());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("error: ") && err.contains(&broken), "{err}");
}

// ---- the real thing: Hadoop Streaming over HDFS ------------------------------------------

/// Run `cmd` with stdout/stderr in files, killing it after `limit`.
fn run_with_limit(mut cmd: Command, limit: Duration) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let (out, err) = (read(&out_path), read(&err_path));
    match status {
        Some(s) => (s.code(), out, err),
        None => panic!("timed out after {limit:?}; stdout:\n{out}\nstderr:\n{err}"),
    }
}

#[test]
fn mapper_runs_as_a_real_hadoop_streaming_job_on_hdfs() {
    // Skips loudly (or fails in CI / with TUSK_REQUIRE_HDFS=1) without Java and Maven.
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let hdfs = dfs.hdfs_url();
    let storage = Storage::new().unwrap();
    let root = storage.open(&format!("{hdfs}/streaming")).unwrap();

    // Images and the corrupt one, then two listings (so two map tasks), one with keys.
    let mut images = BTreeMap::new();
    for (seed, w, h) in [(1, 3, 2), (2, 5, 4), (3, 2, 7), (4, 1, 1)] {
        let img = test_image(seed, w, h);
        let loc = root.join(&format!("images/img-{seed}.png"));
        loc.write(img.bytes.clone()).unwrap();
        images.insert(loc.url(), img);
    }
    let broken = root.join("images/broken.png");
    broken.write(&b"\x89PNG\r\n\x1a\n garbage"[..]).unwrap();
    let urls: Vec<&String> = images.keys().collect();
    let list0 = format!("{}\n{}\n{}\n", urls[0], broken.url(), urls[1]);
    let list1 = format!("a\t{}\nb\t{}\n", urls[2], urls[3]);
    root.join("lists/list-0.txt")
        .write(list0.into_bytes())
        .unwrap();
    root.join("lists/list-1.txt")
        .write(list1.into_bytes())
        .unwrap();

    let mapper = format!(
        "{} mapper normalize-images --mean {MEAN_ARG} --std {STD_ARG}",
        env!("CARGO_BIN_EXE_tusk")
    );
    assert!(
        !mapper.contains('\''),
        "mapper path must not hold quotes: {mapper}"
    );
    let exec_args = format!(
        "{hdfs} -input /streaming/lists -output /streaming/out -mapper '{mapper}' -numReduceTasks 0"
    );
    let mut cmd = Command::new("mvn");
    cmd.args(["-q", "-B", "-Dstyle.color=never", "-f"])
        .arg(tusk_testkit::repo_root().join("testing/streaming"))
        .args(["compile", "exec:java"])
        .arg(format!("-Dexec.args={exec_args}"));
    let start = Instant::now();
    let (code, out, err) = run_with_limit(cmd, Duration::from_secs(600));
    let took = start.elapsed();
    eprintln!("hadoop-streaming job (mvn exec:java, local job runner) took {took:.1?}");
    assert_eq!(
        code,
        Some(0),
        "streaming job failed.\nstdout:\n{out}\nstderr:\n{err}"
    );

    // Hadoop's own counters, from the mapper's stderr protocol lines.
    let counter = |name: &str| -> Option<u64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("Counter tusk {name} ")))
            .map(|v| v.parse().unwrap())
    };
    assert_eq!(counter("corrupt_images"), Some(1), "{out}");
    assert_eq!(counter("images"), Some(4), "{out}");

    // Every output line decodes to the expected floats; every good image exactly once.
    assert!(root.join("out/_SUCCESS").exists().unwrap());
    let parts = storage
        .glob(&format!("{hdfs}/streaming/out/part-*"))
        .unwrap();
    assert_eq!(parts.len(), 2, "one output file per map task: {parts:?}");
    let mut seen = BTreeMap::new();
    for part in parts {
        let body = String::from_utf8(part.read().unwrap().to_vec()).unwrap();
        for line in body.lines() {
            let (url, floats) = parse_line(line);
            let img = images
                .get(&url)
                .unwrap_or_else(|| panic!("unexpected output line for {url}"));
            assert_close(&url, &floats, &expected(img, MEAN, STD));
            assert_eq!(floats.len(), (3 * img.w * img.h) as usize);
            assert!(seen.insert(url.clone(), ()).is_none(), "{url} twice");
        }
    }
    assert_eq!(seen.len(), images.len());

    // The same images through `tusk images normalize`, HDFS to HDFS.
    let ds = format!("{hdfs}/streaming/dataset");
    let o = tusk(
        &[
            "images",
            "normalize",
            "--input",
            &format!("{hdfs}/streaming/images"),
            "--output",
            &ds,
            "--mean",
            MEAN_ARG,
            "--std",
            STD_ARG,
        ],
        b"",
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&broken.url()), "{err}");
    let mut n = 0;
    Input::open(&storage, &ds, None)
        .unwrap()
        .for_each_example(|ex, _| {
            let f = &ex.features.as_ref().unwrap().feature;
            let Some(Kind::BytesList(p)) = &f["path"].kind else {
                panic!("path")
            };
            let url = String::from_utf8(p.value[0].clone()).unwrap();
            assert_eq!(&url, urls[n], "records in URL order");
            let Some(Kind::FloatList(v)) = &f["image"].kind else {
                panic!("image")
            };
            assert_close(&url, &v.value, &expected(&images[&url], MEAN, STD));
            n += 1;
            Ok(true)
        })
        .unwrap();
    assert_eq!(n, images.len());
}
