//! `tusk images normalize` (the image map job) and `tusk mapper normalize-images` (the same job
//! as a Hadoop Streaming mapper).

use std::io::{BufWriter, Write};

use anyhow::Result;
use clap::{Args, Subcommand};
use tusk_images::{Event, NormalizeConfig, Size};
use tusk_storage::Storage;

use crate::records::progress_bar;

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Decode PNG/JPEG images, convert to RGB, optionally resize, normalise each channel as
    /// (x/255 - mean) / std, and write a sharded TFRecord dataset of Examples with `image`
    /// (float_list, C×H×W), `shape` ([C, H, W]) and `path` (the input URL), in input URL order.
    /// Corrupt images are reported on stderr and skipped unless --strict.
    Normalize(NormalizeArgs),
}

#[derive(Debug, Subcommand)]
pub enum MapperCommand {
    /// Hadoop Streaming mapper for the image job: reads one image URL per stdin line (or
    /// key<TAB>url) and writes `url<TAB>base64(little-endian f32 C×H×W)` per image, normalised
    /// exactly like `tusk images normalize`. Corrupt images bump the streaming counter
    /// tusk/corrupt_images and are skipped (fatal with --strict). Use it as
    /// `-mapper "tusk mapper normalize-images --size 224x224"`.
    NormalizeImages(ImageOptions),
}

/// How each image is transformed (shared by the job and the mapper).
#[derive(Debug, Args)]
pub struct ImageOptions {
    /// Per-channel mean subtracted after scaling to [0,1] (ImageNet: 0.485,0.456,0.406)
    /// [default: 0,0,0].
    #[arg(long, value_name = "R,G,B", allow_hyphen_values = true,
          value_parser = tusk_images::parse_channels)]
    mean: Option<[f32; 3]>,
    /// Per-channel standard deviation divided by, each > 0 (ImageNet: 0.229,0.224,0.225)
    /// [default: 1,1,1].
    #[arg(long, value_name = "R,G,B", value_parser = tusk_images::parse_std)]
    std: Option<[f32; 3]>,
    /// Resize every image to exactly WIDTHxHEIGHT (bilinear), e.g. 224x224 [default: keep
    /// each image's size].
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    size: Option<Size>,
    /// Fail on the first image that does not decode (naming it) instead of skipping it.
    #[arg(long)]
    strict: bool,
}

fn parse_size(s: &str) -> Result<Size, String> {
    s.parse()
}

impl ImageOptions {
    fn config(&self) -> NormalizeConfig {
        let d = NormalizeConfig::default();
        NormalizeConfig {
            mean: self.mean.unwrap_or(d.mean),
            std: self.std.unwrap_or(d.std),
            size: self.size,
            strict: self.strict,
            ..d
        }
    }
}

#[derive(Debug, Args)]
pub struct NormalizeArgs {
    /// Images: a PNG/JPEG file, a quoted glob, or a directory (every .png/.jpg/.jpeg below it,
    /// recursively).
    #[arg(long)]
    input: String,
    /// Output dataset directory (must not hold a dataset yet).
    #[arg(long)]
    output: String,
    /// Shard files of the output dataset.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    shards: u64,
    #[command(flatten)]
    options: ImageOptions,
}

pub fn run_images(cmd: ImagesCommand) -> Result<()> {
    match cmd {
        ImagesCommand::Normalize(a) => normalize(a),
    }
}

fn normalize(a: NormalizeArgs) -> Result<()> {
    let storage = Storage::new()?;
    let cfg = NormalizeConfig {
        shards: a.shards as usize,
        ..a.options.config()
    };
    let pb = progress_bar("normalizing");
    let result = tusk_images::normalize(&storage, &a.input, &a.output, &cfg, |e| match e {
        Event::Found { images } => pb.set_length(images as u64),
        Event::Written { .. } => pb.inc(1),
        Event::Corrupt { url, reason } => {
            pb.inc(1);
            pb.suspend(|| eprintln!("warning: {url}: corrupt image, skipped: {reason}"));
        }
    });
    pb.finish_and_clear();
    let s = result?;
    let corrupt = match s.corrupt.len() {
        0 => String::new(),
        n => format!("; skipped {n} corrupt image(s)"),
    };
    eprintln!(
        "wrote {} images to {} (dataset of {} shard(s)){corrupt}",
        s.images, s.output, s.shards
    );
    Ok(())
}

pub fn run_mapper(cmd: MapperCommand) -> Result<()> {
    match cmd {
        MapperCommand::NormalizeImages(o) => map_images(o),
    }
}

fn map_images(o: ImageOptions) -> Result<()> {
    let storage = Storage::new()?;
    let cfg = o.config();
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let summary = tusk_images::map_lines(&storage, stdin, &mut out, &cfg, |url, reason| {
        // Hadoop Streaming reads `reporter:counter:GROUP,NAME,AMOUNT` lines on stderr.
        eprintln!("tusk mapper: skipping corrupt image {url}: {reason}");
        eprintln!("reporter:counter:tusk,corrupt_images,1");
    })?;
    out.flush()?;
    eprintln!("reporter:counter:tusk,images,{}", summary.images);
    Ok(())
}
