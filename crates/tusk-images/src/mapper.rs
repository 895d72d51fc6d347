//! The Hadoop Streaming mapper: image URLs on stdin → `url<TAB>base64(f32 CHW)` lines.

use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tusk_storage::Storage;

use crate::job::{Buffers, Loaded, load, pipelined};
use crate::{Error, NormalizeConfig, Result};

/// What [`map_lines`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapSummary {
    /// Images written (one output line each).
    pub images: u64,
    /// Images skipped because they do not decode.
    pub corrupt: u64,
}

/// Standard base64 (with padding) of the values as little-endian `f32`s: what a Python reader
/// turns back into an array with `np.frombuffer(base64.b64decode(s), "<f4")`.
pub fn encode_floats(values: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    B64.encode(bytes)
}

/// The Hadoop Streaming mapper. Each input line is an image URL, or `key<TAB>url` (what comes
/// after the last TAB is the URL, so `KeyValueTextInputFormat` and `TextInputFormat` with keys
/// both work); blank lines are skipped. For each image it writes one line,
/// `url<TAB>base64(little-endian f32, C×H×W)`, normalised exactly as [`crate::normalize`] does,
/// in input order.
///
/// It streams: a small window of lines (a few per core) is decoded in parallel, written, and
/// flushed before more input is read, so memory does not grow with the input. A corrupt image
/// is passed to `on_corrupt(url, reason)` and skipped, or is an [`Error::Corrupt`] with
/// `cfg.strict`. Unreadable files (missing, storage down) are always errors: the task should
/// fail and be retried rather than silently lose data. `cfg.shards` is not used.
pub fn map_lines(
    storage: &Storage,
    mut input: impl BufRead,
    mut output: impl Write,
    cfg: &NormalizeConfig,
    mut on_corrupt: impl FnMut(&str, &str),
) -> Result<MapSummary> {
    cfg.validate()?;
    let window = (rayon::current_num_threads() * 2).max(4);
    let mut summary = MapSummary::default();
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    let buffers = Buffers::default();
    let mut eof = false;
    let next_batch = || {
        let mut urls: Vec<String> = Vec::with_capacity(window);
        while !eof && urls.len() < window {
            buf.clear();
            let n = input
                .read_until(b'\n', &mut buf)
                .map_err(|source| Error::Input {
                    line: line_no + 1,
                    source,
                })?;
            if n == 0 {
                eof = true;
                break;
            }
            line_no += 1;
            let line = std::str::from_utf8(&buf).map_err(|e| Error::Input {
                line: line_no,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            let url = line.rsplit('\t').next().unwrap_or("").trim();
            if !url.is_empty() {
                urls.push(url.to_string());
            }
        }
        Ok((!urls.is_empty() || !eof).then_some(urls))
    };
    let work = |url: &String| -> Loaded<String> {
        let loc = storage.open(url)?;
        Ok(load(&loc, cfg, &buffers)?.map(|t| {
            let mut line = String::with_capacity(url.len() + t.data.len() * 16 / 3 + 8);
            line.push_str(url);
            line.push('\t');
            line.push_str(&encode_floats(&t.data));
            line.push('\n');
            buffers.put(t.data);
            line
        }))
    };
    pipelined(next_batch, work, |urls, done| {
        for (url, res) in urls.into_iter().zip(done) {
            match res? {
                Ok(line) => {
                    output.write_all(line.as_bytes()).map_err(Error::Output)?;
                    summary.images += 1;
                }
                Err(reason) if cfg.strict => return Err(Error::Corrupt { url, reason }),
                Err(reason) => {
                    on_corrupt(&url, &reason);
                    summary.corrupt += 1;
                }
            }
        }
        output.flush().map_err(Error::Output)
    })?;
    Ok(summary)
}
