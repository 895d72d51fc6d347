//! CPU time per image of the image job's two halves, on one thread, without writing:
//! `normalize_cost DIR [WxH] [ROUNDS]`. Reads every file of DIR into memory, then per round
//! decodes each (`image::load_from_memory`) and runs `normalize_image` (decode, resize to
//! WxH — default 224x224 — and ImageNet normalisation) on each; prints the best round's mean
//! microseconds per image for decoding alone, for the whole, and their difference (the resize
//! and normalisation).

use std::time::Instant;

use tusk_images::{IMAGENET_MEAN, IMAGENET_STD, NormalizeConfig, Size};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .expect("usage: normalize_cost DIR [WxH] [ROUNDS]");
    let (w, h) = args
        .get(2)
        .map_or("224x224", String::as_str)
        .split_once('x')
        .expect("WxH");
    let rounds: usize = args.get(3).map_or(3, |s| s.parse().expect("ROUNDS"));
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("read DIR")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read a file"))
        .collect();
    files.sort();
    let cfg = NormalizeConfig {
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        size: Some(Size {
            width: w.parse().expect("W"),
            height: h.parse().expect("H"),
        }),
        ..NormalizeConfig::default()
    };
    let n = files.len().max(1) as f64;
    let (mut decode, mut whole) = (f64::INFINITY, f64::INFINITY);
    let mut check = 0f64;
    for _ in 0..rounds {
        let t = Instant::now();
        for f in &files {
            let img = image::load_from_memory(f).expect("decode");
            check += f64::from(img.width());
        }
        decode = decode.min(t.elapsed().as_secs_f64() / n);
        let t = Instant::now();
        for f in &files {
            let out = tusk_images::normalize_image(f, &cfg).expect("normalize");
            check += f64::from(out.at(0, 0, 0));
        }
        whole = whole.min(t.elapsed().as_secs_f64() / n);
    }
    println!(
        "{} images: decode {:.1} us, decode + resize + normalise {:.1} us, resize + normalise {:.1} us per image (checksum {check:.3})",
        files.len(),
        decode * 1e6,
        whole * 1e6,
        (whole - decode) * 1e6
    );
}
