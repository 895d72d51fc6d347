//! The image job against independent computations: expected floats are worked out here from
//! known pixels (by hand, in f64), JPEG against the `image` decoder itself, resizing against
//! what a bilinear filter must give on a two-colour image.

use std::io::Cursor;

use base64::Engine as _;
use image::{ImageFormat, Luma, Rgb, Rgba};
use tusk_images::{
    Event, IMAGENET_MEAN, IMAGENET_STD, NormalizeConfig, Size, encode_floats, map_lines, normalize,
    normalize_image, parse_channels, parse_std,
};
use tusk_records::dataset::{Input, MANIFEST, Manifest};
use tusk_records::example::{Example, Kind};
use tusk_storage::Storage;

fn encode(img: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn rgb_png(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> (Vec<u8>, Vec<[u8; 3]>) {
    let img = image::RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y)));
    let pixels = img.pixels().map(|p| p.0).collect();
    (encode(&img.into(), ImageFormat::Png), pixels)
}

/// A 3×2 image whose every sample differs.
fn known(x: u32, y: u32) -> [u8; 3] {
    let i = y * 3 + x;
    [
        (10 + i * 40) as u8,
        250u32.wrapping_sub(i * 30) as u8,
        (i * i * 7) as u8,
    ]
}

/// Expected CHW values for row-major `pixels` of a `w`-wide image, computed in f64.
fn expected(pixels: &[[u8; 3]], mean: [f64; 3], std: [f64; 3]) -> Vec<f64> {
    let mut out = Vec::new();
    for c in 0..3 {
        for p in pixels {
            out.push((p[c] as f64 / 255.0 - mean[c]) / std[c]);
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "value count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= tol,
            "value {i}: got {g}, expected {w} (tolerance {tol})"
        );
    }
}

fn imagenet() -> NormalizeConfig {
    NormalizeConfig {
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        ..NormalizeConfig::default()
    }
}

#[test]
fn png_values_match_hand_computation_in_chw_order() {
    let (bytes, pixels) = rgb_png(3, 2, known);
    // Defaults: x / 255 exactly.
    let t = normalize_image(&bytes, &NormalizeConfig::default()).unwrap();
    assert_eq!(t.shape(), [3, 2, 3]);
    assert_close(&t.data, &expected(&pixels, [0.0; 3], [1.0; 3]), 1e-7);
    // Spot checks of the layout, written out by hand: channel-major, then rows, then columns.
    // Pixel (x=2, y=1) is i=5: [210, 100, 175].
    assert_eq!(t.at(0, 1, 2), 210.0 / 255.0);
    assert_eq!(t.data[5], 210.0 / 255.0); // R plane, row 1, column 2
    assert_eq!(t.data[6 + 5], 100.0 / 255.0); // G plane
    assert_eq!(t.data[12 + 5], 175.0 / 255.0); // B plane
    // Pixel (x=1, y=0) is i=1: [50, 220, 7].
    assert_eq!(t.data[1], 50.0 / 255.0);
    assert_eq!(t.data[6 + 1], 220.0 / 255.0);
    assert_eq!(t.data[12 + 1], 7.0 / 255.0);

    // ImageNet statistics.
    let t = normalize_image(&bytes, &imagenet()).unwrap();
    let m = IMAGENET_MEAN.map(f64::from);
    let s = IMAGENET_STD.map(f64::from);
    assert_close(&t.data, &expected(&pixels, m, s), 1e-5);
    // One value by hand: R of pixel 0 is 10 → (10/255 − 0.485) / 0.229 = −1.94666
    assert!(
        (t.data[0] as f64 - (-1.946_656_4)).abs() < 1e-5,
        "{}",
        t.data[0]
    );
}

#[test]
fn grayscale_and_rgba_become_rgb() {
    let gray = image::GrayImage::from_fn(2, 2, |x, y| Luma([(x * 100 + y * 50) as u8]));
    let t = normalize_image(
        &encode(&gray.into(), ImageFormat::Png),
        &NormalizeConfig::default(),
    )
    .unwrap();
    assert_eq!(t.shape(), [3, 2, 2]);
    let g: Vec<f64> = [0.0, 100.0, 50.0, 150.0]
        .iter()
        .map(|v| v / 255.0)
        .collect();
    let want: Vec<f64> = g.iter().chain(&g).chain(&g).copied().collect();
    assert_close(&t.data, &want, 1e-7);

    // Alpha is dropped, not composited: a transparent pixel keeps its colour.
    let rgba = image::RgbaImage::from_fn(2, 1, |x, _| {
        if x == 0 {
            Rgba([255, 128, 0, 0])
        } else {
            Rgba([1, 2, 3, 255])
        }
    });
    let t = normalize_image(
        &encode(&rgba.into(), ImageFormat::Png),
        &NormalizeConfig::default(),
    )
    .unwrap();
    assert_close(
        &t.data,
        &[255.0, 1.0, 128.0, 2.0, 0.0, 3.0].map(|v| v / 255.0),
        1e-7,
    );
}

#[test]
fn sixteen_bit_png_keeps_its_precision() {
    let img = image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(2, 1, |x, _| {
        Luma([if x == 0 { 1 } else { 65_534 }])
    });
    let t = normalize_image(
        &encode(&img.into(), ImageFormat::Png),
        &NormalizeConfig::default(),
    )
    .unwrap();
    let want = [1.0 / 65535.0, 65534.0 / 65535.0];
    assert_close(&t.data, &[want, want, want].concat(), 1e-7);
}

#[test]
fn jpeg_matches_its_decoder_and_the_original_pixels() {
    let (w, h) = (16, 12);
    let original = image::RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 12) as u8, (y * 16) as u8, (100 + x * 4 + y * 4) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&original)
        .unwrap();
    let cfg = imagenet();
    let t = normalize_image(&jpeg, &cfg).unwrap();
    assert_eq!(t.shape(), [3, 12, 16]);
    // Exactly what the decoder gives, normalised by hand.
    let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    let pixels: Vec<[u8; 3]> = decoded.pixels().map(|p| p.0).collect();
    let m = IMAGENET_MEAN.map(f64::from);
    let s = IMAGENET_STD.map(f64::from);
    assert_close(&t.data, &expected(&pixels, m, s), 1e-5);
    // And close to the pixels that went in (JPEG is lossy): within 8/255 before dividing by std.
    let orig: Vec<[u8; 3]> = original.pixels().map(|p| p.0).collect();
    assert_close(&t.data, &expected(&orig, m, s), 8.0 / 255.0 / 0.224);
}

#[test]
fn resize_is_bilinear() {
    // 16×8: left half red, right half blue; halved to 8×4. A bilinear (triangle) filter widened
    // to the scale factor reads source columns within 2 of each output centre (2j + 0.5): output
    // columns 0–2 see only red, 5–7 only blue, 3 and 4 a mirror-image mix.
    let (bytes, _) = rgb_png(16, 8, |x, _| if x < 8 { [255, 0, 0] } else { [0, 0, 255] });
    let cfg = NormalizeConfig {
        size: Some(Size {
            width: 8,
            height: 4,
        }),
        ..NormalizeConfig::default()
    };
    let t = normalize_image(&bytes, &cfg).unwrap();
    assert_eq!(t.shape(), [3, 4, 8]);
    for y in 0..4 {
        for x in 0..8 {
            let (r, g, b) = (t.at(0, y, x), t.at(1, y, x), t.at(2, y, x));
            assert!(g.abs() < 1e-6, "green at ({x},{y}): {g}");
            assert!((r + b - 1.0).abs() < 1e-5, "weights sum to 1 at ({x},{y})");
            match x {
                0..=2 => assert!((r - 1.0).abs() < 1e-5, "({x},{y}) red: {r}"),
                5..=7 => assert!((b - 1.0).abs() < 1e-5, "({x},{y}) blue: {b}"),
                _ => assert!(r > 0.05 && b > 0.05, "({x},{y}) mixed: {r} {b}"),
            }
            assert!(
                (t.at(0, y, x) - t.at(2, y, 7 - x)).abs() < 1e-5,
                "mirror at {x}"
            );
        }
    }
    // Upsampling, and a non-square target: W×H means width first.
    let (bytes, _) = rgb_png(3, 2, known);
    let cfg = NormalizeConfig {
        size: Some("5x7".parse().unwrap()),
        ..NormalizeConfig::default()
    };
    let t = normalize_image(&bytes, &cfg).unwrap();
    assert_eq!(t.shape(), [3, 7, 5]);
    assert_eq!(t.data.len(), 3 * 7 * 5);
    // A one-colour image stays that colour at any size.
    let (bytes, _) = rgb_png(5, 3, |_, _| [51, 102, 204]);
    let t = normalize_image(&bytes, &cfg).unwrap();
    for (c, v) in [0.2f32, 0.4, 0.8].iter().enumerate() {
        for y in 0..7 {
            for x in 0..5 {
                assert!((t.at(c, y, x) - v).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let (bytes, _) = rgb_png(4, 4, known);
    for bad in [
        &b""[..],
        &b"not an image at all"[..],
        &bytes[..bytes.len() / 2],
        &b"\xff\xd8\xff\xe0 truncated jpeg"[..],
    ] {
        let err = normalize_image(bad, &NormalizeConfig::default()).unwrap_err();
        assert!(!err.is_empty());
    }
}

#[test]
fn parse_errors_are_clear() {
    assert_eq!(parse_channels("0.485, 0.456,0.406").unwrap(), IMAGENET_MEAN);
    let e = parse_channels("1,2").unwrap_err();
    assert!(
        e.contains("three") && e.contains("got 2") && e.contains("'1,2'"),
        "{e}"
    );
    let e = parse_channels("1,x,3").unwrap_err();
    assert!(e.contains("channel 1") && e.contains("'x'"), "{e}");
    assert!(parse_channels("1,2,3,4").unwrap_err().contains("got 4"));
    assert!(
        parse_channels("1,inf,3")
            .unwrap_err()
            .contains("not finite")
    );
    let e = parse_std("1,0,1").unwrap_err();
    assert!(
        e.contains("channel 1") && e.contains("greater than 0"),
        "{e}"
    );
    assert!(parse_std("1,1,-2").is_err());

    assert_eq!(
        "224x160".parse::<Size>().unwrap(),
        Size {
            width: 224,
            height: 160
        }
    );
    assert_eq!("8X4".parse::<Size>().unwrap().to_string(), "8x4");
    for bad in ["224", "0x5", "5x0", "ax5", "5x", "99999x2", "-1x3"] {
        let e = bad.parse::<Size>().unwrap_err();
        assert!(e.contains("WIDTHxHEIGHT") && e.contains(bad), "{bad}: {e}");
    }

    let bad = |cfg: NormalizeConfig, needle: &str| {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    };
    bad(
        NormalizeConfig {
            std: [1.0, 0.0, 1.0],
            ..Default::default()
        },
        "invalid std",
    );
    bad(
        NormalizeConfig {
            mean: [f32::NAN, 0.0, 0.0],
            ..Default::default()
        },
        "invalid mean",
    );
    bad(
        NormalizeConfig {
            shards: 0,
            ..Default::default()
        },
        "invalid shards",
    );
}

/// Images under `memory://imgs/`: three good (PNG, JPEG, PNG in a subdirectory), one corrupt
/// PNG, one text file. Returns (url, bytes) of the good ones in URL order.
fn write_inputs(storage: &Storage) -> Vec<(String, Vec<u8>)> {
    let dir = storage.open("memory://imgs").unwrap();
    let (a, _) = rgb_png(3, 2, known);
    let b = {
        let img = image::RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 9]));
        encode(&img.into(), ImageFormat::Jpeg)
    };
    let (c, _) = rgb_png(2, 5, |x, y| [x as u8, y as u8, 200]);
    dir.join("b.jpg").write(b.clone()).unwrap();
    dir.join("a.png").write(a.clone()).unwrap();
    dir.join("sub/c.PNG").write(c.clone()).unwrap();
    dir.join("broken.png")
        .write(a[..a.len() / 2].to_vec())
        .unwrap();
    dir.join("notes.txt").write(&b"not an image"[..]).unwrap();
    dir.join("_SUCCESS").write(&b""[..]).unwrap();
    vec![
        ("memory://imgs/a.png".into(), a),
        ("memory://imgs/b.jpg".into(), b),
        ("memory://imgs/sub/c.PNG".into(), c),
    ]
}

fn feature<'a>(ex: &'a Example, name: &str) -> &'a Kind {
    ex.features.as_ref().unwrap().feature[name]
        .kind
        .as_ref()
        .unwrap()
}

#[test]
fn dataset_holds_every_image_in_path_order_with_corrupt_ones_counted() {
    let storage = Storage::new().unwrap();
    let good = write_inputs(&storage);
    let cfg = NormalizeConfig {
        shards: 2,
        ..imagenet()
    };
    let mut events = Vec::new();
    let summary = normalize(&storage, "memory://imgs", "memory://out/ds", &cfg, |e| {
        events.push(match e {
            Event::Found { images } => format!("found {images}"),
            Event::Written { url } => format!("ok {url}"),
            Event::Corrupt { url, .. } => format!("corrupt {url}"),
        })
    })
    .unwrap();
    assert_eq!(summary.images, 3);
    assert_eq!(summary.corrupt.len(), 1);
    assert_eq!(summary.corrupt[0].url, "memory://imgs/broken.png");
    assert_eq!(summary.shards, 2);
    // Sorted by URL: a.png, b.jpg, broken.png, sub/c.PNG (notes.txt and _SUCCESS ignored).
    assert_eq!(
        events,
        [
            "found 4",
            "ok memory://imgs/a.png",
            "ok memory://imgs/b.jpg",
            "corrupt memory://imgs/broken.png",
            "ok memory://imgs/sub/c.PNG",
        ]
    );

    let dir = storage.open("memory://out/ds").unwrap();
    let m = Manifest::load(&dir).unwrap();
    assert_eq!(m.records, 3);
    assert_eq!(m.format, "tfrecord");
    // Inputs split 2 + 2; the second run holds the corrupt one.
    let counts: Vec<u64> = m.shards.iter().map(|s| s.records).collect();
    assert_eq!(counts, [2, 1]);
    let names: Vec<&str> = m.schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["image", "path", "shape"]);

    let input = Input::open(&storage, "memory://out/ds", None).unwrap();
    let mut seen = Vec::new();
    input
        .for_each_example(|ex, _| {
            seen.push(ex);
            Ok(true)
        })
        .unwrap();
    assert_eq!(seen.len(), 3);
    for (ex, (url, bytes)) in seen.iter().zip(&good) {
        let Kind::BytesList(p) = feature(ex, "path") else {
            panic!("path is bytes")
        };
        assert_eq!(p.value, [url.as_bytes()]);
        // Independent path: decode with the image crate, normalise by hand.
        let img = image::load_from_memory(bytes).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        let pixels: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        let Kind::Int64List(s) = feature(ex, "shape") else {
            panic!("shape is int64")
        };
        assert_eq!(s.value, [3, h as i64, w as i64], "{url}");
        let Kind::FloatList(f) = feature(ex, "image") else {
            panic!("image is float")
        };
        let want = expected(
            &pixels,
            IMAGENET_MEAN.map(f64::from),
            IMAGENET_STD.map(f64::from),
        );
        assert_close(&f.value, &want, 1e-5);
    }

    // The same output again is refused: datasets are never overwritten.
    let e = normalize(&storage, "memory://imgs", "memory://out/ds", &cfg, |_| {}).unwrap_err();
    assert!(e.to_string().contains(MANIFEST), "{e}");
}

#[test]
fn strict_fails_on_the_corrupt_image_and_commits_nothing() {
    let storage = Storage::new().unwrap();
    write_inputs(&storage);
    let cfg = NormalizeConfig {
        strict: true,
        ..NormalizeConfig::default()
    };
    let e = normalize(
        &storage,
        "memory://imgs",
        "memory://out/strict",
        &cfg,
        |_| {},
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, tusk_images::Error::Corrupt { .. }) && msg.contains("memory://imgs/broken.png"),
        "{msg}"
    );
    let dir = storage.open("memory://out/strict").unwrap();
    assert!(!dir.join(MANIFEST).exists().unwrap());
}

#[test]
fn globs_files_and_missing_inputs() {
    let storage = Storage::new().unwrap();
    write_inputs(&storage);
    let urls = |u: &str| -> Vec<String> {
        tusk_images::list_images(&storage, u)
            .unwrap()
            .iter()
            .map(|l| l.url())
            .collect()
    };
    assert_eq!(
        urls("memory://imgs/*.png"),
        ["memory://imgs/a.png", "memory://imgs/broken.png"]
    );
    assert_eq!(urls("memory://imgs/**/*.{png,PNG}").len(), 3);
    assert_eq!(urls("memory://imgs/b.jpg"), ["memory://imgs/b.jpg"]);
    let e = tusk_images::list_images(&storage, "memory://nothing/here").unwrap_err();
    assert!(e.to_string().contains("no images found"), "{e}");
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let storage = Storage::new().unwrap();
    let dir = storage.open("memory://many").unwrap();
    for i in 0..40u32 {
        let (bytes, _) = rgb_png(4 + i % 3, 3, |x, y| [(i * 5) as u8, x as u8, y as u8]);
        dir.join(&format!("img-{i:03}.png")).write(bytes).unwrap();
    }
    let cfg = NormalizeConfig {
        shards: 3,
        size: Some("4x4".parse().unwrap()),
        ..NormalizeConfig::default()
    };
    let run = |threads: usize, out: &str| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| normalize(&storage, "memory://many", out, &cfg, |_| {}).unwrap());
        let d = storage.open(out).unwrap();
        d.list()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e.location.file_name().to_string(),
                    e.location.read().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let one = run(1, "memory://out/t1");
    let four = run(4, "memory://out/t4");
    assert_eq!(one.len(), 4); // 3 shards + manifest
    assert_eq!(one, four);
}

#[test]
fn mapper_lines_decode_to_the_same_floats() {
    let storage = Storage::new().unwrap();
    let good = write_inputs(&storage);
    let cfg = imagenet();
    let input = format!(
        "{}\n\n7\t{}\r\n0\tkey\tmemory://imgs/broken.png\n{}",
        good[0].0, good[1].0, good[2].0
    );
    let mut out = Vec::new();
    let mut corrupt = Vec::new();
    let s = map_lines(&storage, input.as_bytes(), &mut out, &cfg, |url, _| {
        corrupt.push(url.to_string())
    })
    .unwrap();
    assert_eq!((s.images, s.corrupt), (3, 1));
    assert_eq!(corrupt, ["memory://imgs/broken.png"]);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    for (line, (url, bytes)) in lines.iter().zip(&good) {
        let (u, b64) = line.split_once('\t').unwrap();
        assert_eq!(u, url);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let floats: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(floats, normalize_image(bytes, &cfg).unwrap().data);
    }
    assert_eq!(encode_floats(&[1.0]), "AACAPw==");

    let strict = NormalizeConfig {
        strict: true,
        ..cfg
    };
    let e = map_lines(&storage, input.as_bytes(), Vec::new(), &strict, |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("memory://imgs/broken.png"), "{e}");
    // A missing file is not "corrupt": it fails even without --strict.
    let e = map_lines(
        &storage,
        &b"memory://imgs/nope.png\n"[..],
        Vec::new(),
        &imagenet(),
        |_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope.png"), "{e}");
}
