//! Decoded pixels → normalised `C×H×W` floats in one pass per axis, without the generic
//! per-pixel paths of `image`'s converters and resizer.
//!
//! The arithmetic is `image::imageops::resize(&img.to_rgb32f(), w, h, FilterType::Triangle)`'s,
//! operation for operation: the same sample conversion (`x / 255`, `x / 65535`; grey samples
//! `x * (1 / 255)`), the same tap positions and normalised weights, the rows first (no clamp) and the
//! columns second (clamped to `[0, 1]`), each sum accumulated from 0 in tap order. So the output
//! is bit for bit what that chain gives (a test holds it to that), at a fraction of the cost:
//! 8-bit samples go through a 256-entry table instead of a float image, the row pass is a
//! tight loop over contiguous rows that the compiler vectorises, and the column pass writes the
//! normalised value straight into its channel plane.

use image::DynamicImage;

use crate::{CHANNELS, NormalizeConfig, Tensor};

/// Where each output coordinate reads along one axis: `taps` input samples from `start`, with
/// weights `weights[offset..offset + taps]`.
struct Axis {
    start: Vec<usize>,
    taps: Vec<usize>,
    offset: Vec<usize>,
    weights: Vec<f32>,
}

impl Axis {
    /// A triangle filter of support 1, widened by the scale when shrinking; `input, output ≥ 1`.
    fn triangle(input: usize, output: usize) -> Axis {
        let ratio = input as f32 / output as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let support = sratio;
        let mut axis = Axis {
            start: Vec::with_capacity(output),
            taps: Vec::with_capacity(output),
            offset: Vec::with_capacity(output),
            weights: Vec::new(),
        };
        for out in 0..output {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, input as i64 - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, input as i64);
            let centre = centre - 0.5;
            let offset = axis.weights.len();
            let mut sum = 0.0f32;
            for i in left..right {
                let x = ((i as f32 - centre) / sratio).abs();
                let w = if x < 1.0 { 1.0 - x } else { 0.0 };
                axis.weights.push(w);
                sum += w;
            }
            for w in &mut axis.weights[offset..] {
                *w /= sum;
            }
            axis.start.push(left as usize);
            axis.taps.push((right - left) as usize);
            axis.offset.push(offset);
        }
        axis
    }

    fn get(&self, out: usize) -> (usize, &[f32]) {
        let o = self.offset[out];
        (self.start[out], &self.weights[o..o + self.taps[out]])
    }
}

/// Interleaved samples of a decoded image: `stride` samples per pixel, RGB read from the
/// sample indices `rgb` (grey: `[0, 0, 0]`; alpha is never read).
struct Pixels<'a, T> {
    data: &'a [T],
    width: usize,
    height: usize,
    stride: usize,
    rgb: [usize; 3],
}

/// `img` as normalised `C×H×W` floats, resized to `cfg.size` if one is set.
/// The values go into `data` (cleared first), so a caller can reuse its allocation.
pub(crate) fn normalize(img: &DynamicImage, cfg: &NormalizeConfig, data: Vec<f32>) -> Tensor {
    let (width, height) = (img.width() as usize, img.height() as usize);
    // Colour samples convert as `x / MAX`, grey ones as `x * (1 / MAX)` (`image` expands grey
    // to RGB by another path); the two differ in the last bit for some values.
    let rgb8: [f32; 256] = std::array::from_fn(|x| (x as f32 / 255.0).clamp(0.0, 1.0));
    let grey8: [f32; 256] = std::array::from_fn(|x| x as f32 * (1.0 / 255.0));
    let from_u8 = |x: u8| rgb8[x as usize];
    let grey_u8 = |x: u8| grey8[x as usize];
    let from_u16 = |x: u16| (x as f32 / 65535.0).clamp(0.0, 1.0);
    let grey_u16 = |x: u16| x as f32 * (1.0 / 65535.0);
    fn px<T>(
        data: &[T],
        stride: usize,
        rgb: [usize; 3],
        (width, height): (usize, usize),
    ) -> Pixels<'_, T> {
        Pixels {
            data,
            width,
            height,
            stride,
            rgb,
        }
    }
    let dims = (width, height);
    const GREY: [usize; 3] = [0, 0, 0];
    const RGB: [usize; 3] = [0, 1, 2];
    match img {
        DynamicImage::ImageLuma8(i) => run(&px(i.as_raw(), 1, GREY, dims), grey_u8, cfg, data),
        DynamicImage::ImageLumaA8(i) => run(&px(i.as_raw(), 2, GREY, dims), grey_u8, cfg, data),
        DynamicImage::ImageRgb8(i) => run(&px(i.as_raw(), 3, RGB, dims), from_u8, cfg, data),
        DynamicImage::ImageRgba8(i) => run(&px(i.as_raw(), 4, RGB, dims), from_u8, cfg, data),
        DynamicImage::ImageLuma16(i) => run(&px(i.as_raw(), 1, GREY, dims), grey_u16, cfg, data),
        DynamicImage::ImageLumaA16(i) => run(&px(i.as_raw(), 2, GREY, dims), grey_u16, cfg, data),
        DynamicImage::ImageRgb16(i) => run(&px(i.as_raw(), 3, RGB, dims), from_u16, cfg, data),
        DynamicImage::ImageRgba16(i) => run(&px(i.as_raw(), 4, RGB, dims), from_u16, cfg, data),
        // Float images (and any layout a later `image` adds): its own conversion, then ours.
        other => {
            let rgb = other.to_rgb32f();
            run(&px(rgb.as_raw(), 3, RGB, dims), |x: f32| x, cfg, data)
        }
    }
}

thread_local! {
    /// Per-thread buffers for the planar input and the row pass, reused from image to image
    /// (fresh ones cost a page fault per 4 KiB every time).
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = Default::default();
}

/// Resample `src` to `out_w × out_h`, handing each output column of each channel, clamped to
/// `[0, 1]`, to `emit(channel, column index, values top to bottom)` (a buffer it may change).
fn resample<T: Copy>(
    src: &Pixels<'_, T>,
    conv: impl Fn(T) -> f32,
    (out_w, out_h): (usize, usize),
    (planes, tmp, cols_t): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>),
    mut emit: impl FnMut(usize, usize, &mut [f32]),
) {
    let (w, h) = (src.width, src.height);
    // The input as three planes of converted samples, so that the row pass below is plain
    // multiply-adds over contiguous memory.
    // (Every value of the three buffers is written before it is read: resizing without
    // clearing spares zeroing them again for each image.)
    planes.resize(CHANNELS * w * h, 0.0);
    {
        let (p0, rest) = planes.split_at_mut(w * h);
        let (p1, p2) = rest.split_at_mut(w * h);
        let px = src.data.chunks_exact(src.stride).take(w * h);
        for (i, p) in px.enumerate() {
            p0[i] = conv(p[src.rgb[0]]);
            p1[i] = conv(p[src.rgb[1]]);
            p2[i] = conv(p[src.rgb[2]]);
        }
    }
    // Rows first: `out_h` rows of the input's width per channel, each a weighted sum of input
    // rows accumulated from 0 in tap order.
    let rows = Axis::triangle(h, out_h);
    tmp.resize(CHANNELS * out_h * w, 0.0);
    for c in 0..CHANNELS {
        let plane = &planes[c * w * h..(c + 1) * w * h];
        for oy in 0..out_h {
            let (start, ws) = rows.get(oy);
            taps(plane, w, start, ws, &mut tmp[(c * out_h + oy) * w..][..w]);
        }
    }
    // Then columns, clamped to [0, 1]: on the transposed rows, so that an output column is,
    // like an output row above, a weighted sum of contiguous input columns, tap by tap.
    let cols = Axis::triangle(w, out_w);
    cols_t.resize(w * out_h, 0.0);
    let mut acc = vec![0f32; out_h];
    for c in 0..CHANNELS {
        let t = &tmp[c * out_h * w..(c + 1) * out_h * w];
        transpose(t, w, cols_t);
        for ox in 0..out_w {
            let (start, ws) = cols.get(ox);
            taps(cols_t, out_h, start, ws, &mut acc);
            for a in &mut acc {
                *a = a.clamp(0.0, 1.0);
            }
            emit(c, ox, &mut acc);
        }
    }
}

/// `out[x] = Σ_k src[(start + k)·stride + x] · ws[k]`, accumulated from 0 in tap order — for
/// a block of `x` at a time in registers, so that each tap's line is read once and `out`
/// written once (the same operations per value, so the same bits, as summing tap by tap
/// into `out`). Compiled also for AVX2 and chosen at run time where the CPU has it: wider
/// vectors, the same separate multiplies and adds (no fused multiply-add), so the same bits.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+avx"))]
fn taps(src: &[f32], stride: usize, start: usize, ws: &[f32], out: &mut [f32]) {
    const B: usize = 16;
    let n = out.len();
    let mut blocks = out.chunks_exact_mut(B);
    for (b, o) in blocks.by_ref().enumerate() {
        let mut acc = [0f32; B];
        for (k, &wt) in ws.iter().enumerate() {
            let line = &src[(start + k) * stride + b * B..][..B];
            for (a, &v) in acc.iter_mut().zip(line) {
                *a += v * wt;
            }
        }
        o.copy_from_slice(&acc);
    }
    let done = n - n % B;
    for (x, o) in blocks.into_remainder().iter_mut().enumerate() {
        let mut a = 0f32;
        for (k, &wt) in ws.iter().enumerate() {
            a += src[(start + k) * stride + done + x] * wt;
        }
        *o = a;
    }
}

/// `dst` = `src` (rows of `width` values) transposed, in tiles that stay in cache.
fn transpose(src: &[f32], width: usize, dst: &mut [f32]) {
    const TILE: usize = 8;
    let height = src.len() / width;
    for y0 in (0..height).step_by(TILE) {
        for x0 in (0..width).step_by(TILE) {
            for x in x0..(x0 + TILE).min(width) {
                let col = &mut dst[x * height..(x + 1) * height];
                for y in y0..(y0 + TILE).min(height) {
                    col[y] = src[y * width + x];
                }
            }
        }
    }
}

fn run<T: Copy>(
    src: &Pixels<'_, T>,
    conv: impl Fn(T) -> f32,
    cfg: &NormalizeConfig,
    mut data: Vec<f32>,
) -> Tensor {
    let (out_w, out_h) = match cfg.size {
        Some(s) => (s.width as usize, s.height as usize),
        None => (src.width, src.height),
    };
    let plane = out_w * out_h;
    data.clear();
    data.resize(CHANNELS * plane, 0.0);
    let norm = |c: usize, x: f32| (x - cfg.mean[c]) / cfg.std[c];
    if (out_w, out_h) == (src.width, src.height) || src.width == 0 || src.height == 0 {
        // Nothing to resample (`image` copies such images unchanged).
        for (i, p) in src.data.chunks_exact(src.stride).enumerate().take(plane) {
            for c in 0..CHANNELS {
                data[c * plane + i] = norm(c, conv(p[src.rgb[c]]));
            }
        }
        return Tensor {
            height: out_h,
            width: out_w,
            data,
        };
    }
    SCRATCH.with_borrow_mut(|(planes, tmp, cols_t)| {
        resample(
            src,
            conv,
            (out_w, out_h),
            (planes, tmp, cols_t),
            |c, ox, col| {
                // normalised in place first: contiguous, so whole vectors at a time
                let (mean, std) = (cfg.mean[c], cfg.std[c]);
                for v in col.iter_mut() {
                    *v = (*v - mean) / std;
                }
                let dst = &mut data[c * plane..(c + 1) * plane];
                for (d, &v) in dst[ox..].iter_mut().step_by(out_w).zip(col.iter()) {
                    *d = v;
                }
            },
        )
    });
    Tensor {
        height: out_h,
        width: out_w,
        data,
    }
}

#[cfg(test)]
mod tests {
    use image::imageops::{self, FilterType};
    use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};

    use super::*;
    use crate::Size;

    /// The chain this module replaces, step for step as it was.
    fn reference(img: &DynamicImage, cfg: &NormalizeConfig) -> Vec<f32> {
        let mut rgb = img.to_rgb32f();
        if let Some(s) = cfg.size {
            rgb = imageops::resize(&rgb, s.width, s.height, FilterType::Triangle);
        }
        let plane = (rgb.width() * rgb.height()) as usize;
        let mut data = vec![0f32; CHANNELS * plane];
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..CHANNELS {
                data[c * plane + i] = (px.0[c] - cfg.mean[c]) / cfg.std[c];
            }
        }
        data
    }

    fn images(w: u32, h: u32, seed: u64) -> Vec<DynamicImage> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut v8 = |n: usize| (0..n).map(|_| next() as u8).collect::<Vec<u8>>();
        let n = (w * h) as usize;
        let rgb8 = v8(3 * n);
        let rgba8 = v8(4 * n);
        let l8 = v8(n);
        let la8 = v8(2 * n);
        let rgb16: Vec<u16> = v8(6 * n)
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let l16: Vec<u16> = rgb16[..n].to_vec();
        let la16: Vec<u16> = rgb16[..2 * n].to_vec();
        let rgba16: Vec<u16> = rgb16.iter().chain(&rgb16[..n]).copied().collect();
        let rgbf: Vec<f32> = rgb8.iter().map(|&x| x as f32 / 200.0).collect();
        vec![
            DynamicImage::ImageRgb8(ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, rgb8).unwrap()),
            DynamicImage::ImageRgba8(ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, rgba8).unwrap()),
            DynamicImage::ImageLuma8(ImageBuffer::<Luma<u8>, _>::from_raw(w, h, l8).unwrap()),
            DynamicImage::ImageLumaA8(ImageBuffer::<LumaA<u8>, _>::from_raw(w, h, la8).unwrap()),
            DynamicImage::ImageRgb16(ImageBuffer::<Rgb<u16>, _>::from_raw(w, h, rgb16).unwrap()),
            DynamicImage::ImageLuma16(ImageBuffer::<Luma<u16>, _>::from_raw(w, h, l16).unwrap()),
            DynamicImage::ImageLumaA16(ImageBuffer::<LumaA<u16>, _>::from_raw(w, h, la16).unwrap()),
            DynamicImage::ImageRgba16(ImageBuffer::<Rgba<u16>, _>::from_raw(w, h, rgba16).unwrap()),
            DynamicImage::ImageRgb32F(ImageBuffer::<Rgb<f32>, _>::from_raw(w, h, rgbf).unwrap()),
        ]
    }

    #[test]
    fn equals_image_resize_bit_for_bit() {
        let sizes = [
            (1, 1),
            (7, 5),
            (224, 224),
            (13, 40),
            (40, 13),
            (31, 31),
            (64, 17),
        ];
        let inputs = [(1, 1), (3, 9), (31, 31), (250, 301), (40, 13), (17, 64)];
        let mut checked = 0;
        for (k, &(iw, ih)) in inputs.iter().enumerate() {
            for img in images(iw, ih, k as u64) {
                for size in sizes.iter().map(|&(w, h)| {
                    Some(Size {
                        width: w,
                        height: h,
                    })
                }) {
                    for size in [size, None] {
                        let cfg = NormalizeConfig {
                            size,
                            mean: crate::IMAGENET_MEAN,
                            std: crate::IMAGENET_STD,
                            ..NormalizeConfig::default()
                        };
                        let want = reference(&img, &cfg);
                        let got = normalize(&img, &cfg, vec![1.0; 5]);
                        assert_eq!(got.data.len(), want.len());
                        for (i, (g, w)) in got.data.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "{:?} {iw}x{ih} -> {size:?} at {i}: {g} vs {w}",
                                img.color()
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, inputs.len() * 9 * sizes.len() * 2);
    }
}
