//! The image normalisation map job: PNG/JPEG files on any storage URL → normalised float
//! tensors, either as a sharded TFRecord dataset ([`normalize`], `tusk images normalize`) or as a
//! Hadoop Streaming mapper ([`map_lines`], `tusk mapper normalize-images`).
//!
//! Every image goes through the same steps ([`normalize_image`]), in both modes:
//!
//! 1. **Decode** PNG or JPEG; the format comes from the file's bytes, not its name. Anything
//!    that does not decode is a *corrupt* image: counted and reported, fatal only with
//!    [`NormalizeConfig::strict`].
//! 2. **Convert to RGB**, three channels as floats in `[0, 1]`: 8-bit samples become `x / 255`
//!    (16-bit PNG samples `x / 65535`, so they keep their precision). Grayscale is replicated
//!    into R, G and B; an alpha channel is dropped (not composited onto a background).
//! 3. **Resize** (optional, [`NormalizeConfig::size`]) to exactly `W×H`, ignoring the aspect
//!    ratio, with a bilinear filter (`image`'s `FilterType::Triangle`; widened when shrinking,
//!    so downsampling averages instead of aliasing). Resizing works on the float values, so
//!    nothing is rounded back to 8 bits.
//! 4. **Normalise** each channel: `(x - mean[c]) / std[c]`. The defaults (mean 0, std 1) keep
//!    `x / 255`; ImageNet's statistics are [`IMAGENET_MEAN`] and [`IMAGENET_STD`].
//! 5. **Lay out** channel-major: `C×H×W` (all of R, then G, then B, each row by row), as
//!    PyTorch expects.
//!
//! Dataset records are `tf.train.Example`s with `image` (`float_list`, `C·H·W` values in CHW
//! order), `shape` (`int64_list`, `[C, H, W]`) and `path` (`bytes_list`, the input URL).
//! Mapper output lines are `url<TAB>base64(little-endian f32 CHW)`.
//!
//! ```
//! let mut png = Vec::new();
//! image::RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 51]))
//!     .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
//!     .unwrap();
//! let t = tusk_images::normalize_image(&png, &tusk_images::NormalizeConfig::default()).unwrap();
//! assert_eq!((t.channels(), t.height, t.width), (3, 1, 2));
//! assert_eq!(t.data, [1.0, 1.0, 0.0, 0.0, 0.2, 0.2]);
//! ```

mod error;
mod job;
mod mapper;
mod resample;

use std::fmt;
use std::str::FromStr;

use image::{DynamicImage, ImageReader};

pub use error::{Error, Result};
pub use job::{CorruptImage, Event, Summary, is_image_name, list_images, normalize};
pub use mapper::{MapSummary, encode_floats, map_lines};

/// Channels of every output tensor (RGB).
pub const CHANNELS: usize = 3;

/// ImageNet's per-channel mean (RGB), as torchvision's pretrained models expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet's per-channel standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Largest width or height [`Size`] accepts.
pub const MAX_SIDE: u32 = 16_384;

/// A target size, `W×H` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for Size {
    type Err = String;

    /// `WxH`, e.g. `224x224` (`X` works too); each side 1 to [`MAX_SIDE`].
    fn from_str(s: &str) -> Result<Size, String> {
        let bad = |why: &str| format!("expected WIDTHxHEIGHT such as 224x224, got '{s}': {why}");
        let (w, h) = s
            .trim()
            .split_once(['x', 'X'])
            .ok_or_else(|| bad("no 'x' between width and height"))?;
        let side = |v: &str, name: &str| -> Result<u32, String> {
            let n: u32 = v
                .trim()
                .parse()
                .map_err(|_| bad(&format!("{name} '{v}' is not a whole number")))?;
            if n == 0 || n > MAX_SIDE {
                return Err(bad(&format!("{name} must be 1 to {MAX_SIDE}")));
            }
            Ok(n)
        };
        Ok(Size {
            width: side(w, "width")?,
            height: side(h, "height")?,
        })
    }
}

/// Parse a per-channel triple `r,g,b` (e.g. a mean: `0.485,0.456,0.406`): exactly three
/// comma-separated finite numbers.
pub fn parse_channels(s: &str) -> Result<[f32; 3], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        return Err(format!(
            "expected three comma-separated numbers r,g,b (one per channel), got {} in '{s}'",
            parts.len()
        ));
    }
    let mut out = [0f32; 3];
    for (i, p) in parts.iter().enumerate() {
        let v: f32 = p
            .parse()
            .map_err(|_| format!("channel {i} value '{p}' in '{s}' is not a number"))?;
        if !v.is_finite() {
            return Err(format!("channel {i} value '{p}' in '{s}' is not finite"));
        }
        out[i] = v;
    }
    Ok(out)
}

/// Parse a per-channel standard deviation `r,g,b`: like [`parse_channels`], each value > 0.
pub fn parse_std(s: &str) -> Result<[f32; 3], String> {
    let v = parse_channels(s)?;
    if let Some(i) = v.iter().position(|x| *x <= 0.0) {
        return Err(format!(
            "channel {i} value {} in '{s}' must be greater than 0 (values are divided by it)",
            v[i]
        ));
    }
    Ok(v)
}

/// What to do to each image and how to write the result.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizeConfig {
    /// Per-channel mean (RGB, on the `[0, 1]` scale) subtracted from each value; default 0.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB, > 0) each value is divided by; default 1.
    pub std: [f32; 3],
    /// Resize every image to this size (bilinear); `None` keeps each image's own size.
    pub size: Option<Size>,
    /// Shard files of the output dataset ([`normalize`] only; the mapper ignores it); ≥ 1.
    pub shards: usize,
    /// A corrupt image is an error ([`Error::Corrupt`]) instead of being counted and skipped.
    pub strict: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            mean: [0.0; 3],
            std: [1.0; 3],
            size: None,
            shards: 1,
            strict: false,
        }
    }
}

impl NormalizeConfig {
    /// Check the values the parsers would have checked, for configs built in code.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if let Some(i) = self.mean.iter().position(|x| !x.is_finite()) {
            return bad("mean", format!("channel {i} is not finite"));
        }
        if let Some(i) = self.std.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
            return bad(
                "std",
                format!("channel {i} is {}, must be finite and > 0", self.std[i]),
            );
        }
        if let Some(s) = self.size
            && (s.width == 0 || s.height == 0 || s.width > MAX_SIDE || s.height > MAX_SIDE)
        {
            return bad("size", format!("{s}: each side must be 1 to {MAX_SIDE}"));
        }
        if self.shards == 0 {
            return bad("shards", "must be at least 1".into());
        }
        Ok(())
    }
}

/// One normalised image: `C×H×W` floats, channel-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `CHANNELS * height * width` values: channel, then row, then column.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Always [`CHANNELS`] (3).
    pub fn channels(&self) -> usize {
        CHANNELS
    }

    /// `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        [CHANNELS, self.height, self.width]
    }

    /// The value of channel `c` at row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }
}

/// Decode one PNG or JPEG and normalise it as the crate docs describe. The error is why the
/// bytes are not a usable image (the caller knows which file it was).
pub fn normalize_image(bytes: &[u8], cfg: &NormalizeConfig) -> Result<Tensor, String> {
    normalize_image_into(bytes, cfg, Vec::new())
}

/// [`normalize_image`] writing into `data`'s allocation (a [`Tensor::data`] done with).
pub(crate) fn normalize_image_into(
    bytes: &[u8],
    cfg: &NormalizeConfig,
    data: Vec<f32>,
) -> Result<Tensor, String> {
    let img: DynamicImage = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    Ok(resample::normalize(&img, cfg, data))
}
