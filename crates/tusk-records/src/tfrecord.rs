//! TFRecord framing, exactly as TensorFlow writes it:
//!
//! ```text
//! u64 length (little endian) | u32 masked_crc32c(length) | data[length] | u32 masked_crc32c(data)
//! ```
//!
//! optionally inside a GZIP or ZLIB stream (TensorFlow's `compression_type`). Both CRCs are
//! verified on read; offsets in errors are byte offsets in the uncompressed record stream.

use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::Compression as Level;
use flate2::read::{MultiGzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use tusk_storage::{AtomicWriter, Location};

use crate::{Error, Result};

const MASK_DELTA: u32 = 0xa282_ead8;

/// TensorFlow's masked CRC32C: rotate right by 15 bits and add a constant.
#[inline]
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Compression of a TFRecord file (TensorFlow's `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain framing.
    #[default]
    None,
    /// A GZIP stream (`.gz`).
    Gzip,
    /// A ZLIB stream (`.zz`, `.zlib`).
    Zlib,
}

impl Compression {
    /// Guess from a file name: `.gz` → GZIP, `.zz`/`.zlib` → ZLIB, anything else → none.
    pub fn from_name(name: &str) -> Compression {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Compression::Gzip
        } else if lower.ends_with(".zz") || lower.ends_with(".zlib") {
            Compression::Zlib
        } else {
            Compression::None
        }
    }

    /// Parse a flag value: `none`/`""`, `gzip`, `zlib` (any case, as TensorFlow spells them).
    pub fn parse(s: &str) -> Option<Compression> {
        match s.to_ascii_lowercase().as_str() {
            "" | "none" => Some(Compression::None),
            "gzip" | "gz" => Some(Compression::Gzip),
            "zlib" | "zz" => Some(Compression::Zlib),
            _ => None,
        }
    }

    /// Name as TensorFlow spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zlib => "zlib",
        }
    }

    /// The file-name suffix tusk gives files of this compression.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zlib => ".zz",
        }
    }
}

/// Reads records one by one from any byte stream, verifying both CRCs.
pub struct Reader<R> {
    inner: R,
    name: String,
    compression: Compression,
    offset: u64,
    index: u64,
    buf: Vec<u8>,
    verify: bool,
}

impl<R: BufRead> Reader<R> {
    /// Read records from `inner` (already decompressed); `name` is used in error messages.
    pub fn new(inner: R, name: impl Into<String>) -> Self {
        Reader {
            inner,
            name: name.into(),
            compression: Compression::None,
            offset: 0,
            index: 0,
            buf: Vec::new(),
            verify: true,
        }
    }

    /// Skip CRC verification (never the default; for damaged-data recovery tools only).
    pub fn without_crc_check(mut self) -> Self {
        self.verify = false;
        self
    }

    /// Byte offset (in the uncompressed stream) of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Index of the next record (0-based).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The file name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next record's payload, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>> {
        let start = self.offset;
        let mut header = [0u8; 12];
        let got = read_full(&mut self.inner, &mut header).map_err(|e| self.io_err(e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < 12 {
            return Err(self.truncated(start, "record header (length + length CRC)", 12, got));
        }
        let len_bytes: [u8; 8] = header[..8].try_into().expect("8 bytes");
        let stored = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        if self.verify {
            let computed = masked_crc(&len_bytes);
            if computed != stored {
                return Err(self.crc(start, "length", stored, computed));
            }
        }
        let len = u64::from_le_bytes(len_bytes);
        let need = len.saturating_add(4);
        // Grow the buffer only as data actually arrives, so a corrupt or hostile length
        // cannot make us allocate more than the file holds.
        let got = if need <= self.buf.len() as u64 {
            read_full(&mut self.inner, &mut self.buf[..need as usize])
        } else {
            self.buf.clear();
            (&mut self.inner).take(need).read_to_end(&mut self.buf)
        }
        .map_err(|e| self.io_err(e))?;
        if (got as u64) < need {
            return Err(self.truncated(start, "record data + data CRC", need, got));
        }
        let len_usize = len as usize;
        let body = &self.buf[..len_usize + 4];
        let stored = u32::from_le_bytes(body[len_usize..].try_into().expect("4 bytes"));
        if self.verify {
            let computed = masked_crc(&body[..len_usize]);
            if computed != stored {
                return Err(self.crc(start, "data", stored, computed));
            }
        }
        self.offset += 16 + len;
        self.index += 1;
        Ok(Some(&self.buf[..len_usize]))
    }

    fn io_err(&self, e: io::Error) -> Error {
        if self.compression != Compression::None {
            Error::Decompress {
                file: self.name.clone(),
                compression: self.compression.as_str(),
                offset: self.offset,
                source: e,
            }
        } else {
            Error::Io {
                file: self.name.clone(),
                source: e,
            }
        }
    }

    fn truncated(&self, offset: u64, what: &'static str, expected: u64, found: usize) -> Error {
        Error::Truncated {
            file: self.name.clone(),
            offset,
            index: self.index,
            what,
            expected,
            found: found as u64,
        }
    }

    fn crc(&self, offset: u64, what: &'static str, stored: u32, computed: u32) -> Error {
        Error::Crc {
            file: self.name.clone(),
            offset,
            index: self.index,
            what,
            stored,
            computed,
        }
    }
}

/// A TFRecord reader over a file in storage, decompressing as needed.
pub type FileReader = Reader<BufReader<Box<dyn Read + Send>>>;

/// Open a TFRecord file for reading; `compression: None` guesses from the file name.
pub fn open(loc: &Location, compression: Option<Compression>) -> Result<FileReader> {
    let compression = compression.unwrap_or_else(|| Compression::from_name(loc.file_name()));
    // One buffer only: the decoders keep their own input buffer.
    let raw = loc.reader()?;
    let inner: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(MultiGzDecoder::new(raw)),
        Compression::Zlib => Box::new(ZlibDecoder::new(raw)),
    };
    let mut r = Reader::new(BufReader::with_capacity(1 << 20, inner), loc.url());
    r.compression = compression;
    Ok(r)
}

/// Read until `buf` is full or the stream ends; returns the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes framed records to any byte sink.
pub struct Writer<W: Write> {
    inner: W,
    records: u64,
    bytes: u64,
}

impl<W: Write> Writer<W> {
    /// Frame records into `inner`.
    pub fn new(inner: W) -> Self {
        Writer {
            inner,
            records: 0,
            bytes: 0,
        }
    }

    /// Append one record.
    pub fn write_record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.inner.write_all(&len)?;
        self.inner.write_all(&masked_crc(&len).to_le_bytes())?;
        self.inner.write_all(data)?;
        self.inner.write_all(&masked_crc(data).to_le_bytes())?;
        self.records += 1;
        self.bytes += data.len() as u64 + 16;
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Uncompressed bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sink back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// The byte sink under a [`FileWriter`]: an atomic storage writer, maybe compressing.
pub enum Sink {
    /// No compression.
    Plain(AtomicWriter),
    /// GZIP stream.
    Gzip(GzEncoder<AtomicWriter>),
    /// ZLIB stream.
    Zlib(ZlibEncoder<AtomicWriter>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::Zlib(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::Zlib(w) => w.flush(),
        }
    }
}

/// A TFRecord file being written to storage; it appears atomically on [`FileWriter::finish`].
pub struct FileWriter {
    writer: Writer<Sink>,
    url: String,
}

impl FileWriter {
    /// Start writing `loc`; `compression: None` picks it from the file name.
    pub fn create(loc: &Location, compression: Option<Compression>) -> Result<FileWriter> {
        let compression = compression.unwrap_or_else(|| Compression::from_name(loc.file_name()));
        let w = loc.writer()?;
        let sink = match compression {
            Compression::None => Sink::Plain(w),
            Compression::Gzip => Sink::Gzip(GzEncoder::new(w, Level::default())),
            Compression::Zlib => Sink::Zlib(ZlibEncoder::new(w, Level::default())),
        };
        Ok(FileWriter {
            writer: Writer::new(sink),
            url: loc.url(),
        })
    }

    /// Append one record.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.writer.write_record(data).map_err(|e| Error::Io {
            file: self.url.clone(),
            source: e,
        })
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.writer.records()
    }

    /// Finish the compression stream and publish the file atomically.
    pub fn finish(self) -> Result<()> {
        let url = self.url;
        let io = |e: io::Error| Error::Io {
            file: url.clone(),
            source: e,
        };
        let w = match self.writer.into_inner() {
            Sink::Plain(w) => w,
            Sink::Gzip(g) => g.finish().map_err(io)?,
            Sink::Zlib(z) => z.finish().map_err(io)?,
        };
        w.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow_reference_values() {
        // crc32c("123456789") = 0xe3069283 (the standard check value); TensorFlow masks it.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(
            masked_crc(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(MASK_DELTA)
        );
        // Header of an empty record as TensorFlow writes it: len=0, masked crc of 8 zero bytes.
        let mut out = Vec::new();
        Writer::new(&mut out).write_record(b"").unwrap();
        assert_eq!(out.len(), 16);
        assert_eq!(&out[..8], &[0u8; 8]);
    }

    #[test]
    fn roundtrip_and_offsets() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        for r in [&b"a"[..], b"", b"hello world"] {
            w.write_record(r).unwrap();
        }
        let mut r = Reader::new(&out[..], "mem");
        assert_eq!(r.next_record().unwrap().unwrap(), b"a");
        assert_eq!(r.offset(), 17);
        assert_eq!(r.next_record().unwrap().unwrap(), b"");
        assert_eq!(r.next_record().unwrap().unwrap(), b"hello world");
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.index(), 3);
    }

    #[test]
    fn detects_every_single_byte_flip_and_every_truncation() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.write_record(b"first").unwrap();
        w.write_record(b"second record").unwrap();
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x01;
            let mut r = Reader::new(&bad[..], "f");
            let err = loop {
                match r.next_record() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("flip at {i} not detected"),
                    Err(e) => break e,
                }
            };
            assert!(
                matches!(err, Error::Crc { .. } | Error::Truncated { .. }),
                "{err}"
            );
        }
        for cut in 1..out.len() {
            if cut == 21 {
                continue; // a clean record boundary
            }
            let mut r = Reader::new(&out[..cut], "f");
            let err = loop {
                match r.next_record() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("truncation at {cut} not detected"),
                    Err(e) => break e,
                }
            };
            assert!(matches!(err, Error::Truncated { .. }), "{err}");
        }
    }

    #[test]
    fn compression_from_names() {
        assert_eq!(Compression::from_name("a.tfrecord.gz"), Compression::Gzip);
        assert_eq!(Compression::from_name("a.zz"), Compression::Zlib);
        assert_eq!(Compression::from_name("a.ZLIB"), Compression::Zlib);
        assert_eq!(Compression::from_name("a.tfrecord"), Compression::None);
        assert_eq!(Compression::parse("GZIP"), Some(Compression::Gzip));
        assert_eq!(Compression::parse("lz4"), None);
    }
}
