//! `tusk fs …`: files on any storage URL, as `hdfs dfs` and `aws s3` do it, between any two
//! backends (local, HDFS, WebHDFS, S3, Azure).

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::HumanBytes;
use tusk_storage::{Location, Storage};

#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// List the files below a directory (recursively), with their sizes.
    Ls(LsArgs),
    /// Copy a file, or every file below a directory, to another URL (any two backends). Each
    /// file is streamed and published atomically; existing files are replaced.
    Cp(CpArgs),
    /// Write a file's bytes to stdout.
    Cat(CatArgs),
    /// Delete a file, or with --recursive everything below a directory.
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// A directory or file URL.
    url: String,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a file or a directory URL.
    src: String,
    /// Destination: the file's new URL, or the directory the source directory's files go to.
    dst: String,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// A file URL.
    url: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// A file URL, or a directory with --recursive.
    url: String,
    /// Delete every file below URL.
    #[arg(long, short = 'r')]
    recursive: bool,
}

pub fn run(cmd: FsCommand) -> Result<()> {
    let storage = Storage::new()?;
    match cmd {
        FsCommand::Ls(a) => {
            let loc = storage.open(&a.url)?;
            let mut entries = loc.list()?;
            if entries.is_empty() && loc.exists()? {
                let size = loc.head()?.size;
                println!("{size:>14}  {}", loc.url());
                return Ok(());
            }
            entries.sort_by_key(|e| e.location.url());
            for e in entries {
                println!("{:>14}  {}", e.size, e.location.url());
            }
            Ok(())
        }
        FsCommand::Cp(a) => copy(&storage, &a.src, &a.dst),
        FsCommand::Cat(a) => {
            let mut r = storage.open(&a.url)?.reader()?;
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut r, &mut out).with_context(|| a.url.clone())?;
            out.flush()?;
            Ok(())
        }
        FsCommand::Rm(a) => {
            let loc = storage.open(&a.url)?;
            if a.recursive {
                let n = loc.delete_all()?;
                eprintln!("deleted {n} files below {}", loc.url());
            } else {
                if !loc.exists()? {
                    bail!("{}: no such file", loc.url());
                }
                loc.delete()?;
            }
            Ok(())
        }
    }
}

fn copy(storage: &Storage, src: &str, dst: &str) -> Result<()> {
    let from = storage.open(src)?;
    let to = storage.open(dst)?;
    let files = from.list()?;
    let t0 = Instant::now();
    let mut bytes = 0u64;
    if files.is_empty() {
        // A single file (or an error naming it when there is none).
        from.head()?;
        bytes += copy_one(&from, &to)?;
    } else {
        for e in &files {
            bytes += copy_one(&e.location, &to.join(&e.location.relative_to(&from)))?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "copied {} files, {} in {secs:.2} s ({}/s)",
        files.len().max(1),
        HumanBytes(bytes),
        HumanBytes((bytes as f64 / secs.max(1e-9)) as u64)
    );
    Ok(())
}

/// Stream one file: never more than a buffer (and the writer's upload part) in memory.
fn copy_one(from: &Location, to: &Location) -> Result<u64> {
    if let (Some(src), Some(dst)) = (from.local_path(), to.local_path()) {
        return copy_local(&src, &dst);
    }
    let mut r = from.reader()?;
    let mut w = to.writer()?;
    let mut buf = vec![0u8; 4 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|e| naming(e, from))?;
        if k == 0 {
            break;
        }
        w.write_all(&buf[..k]).map_err(|e| naming(e, to))?;
        n += k as u64;
    }
    w.finish()?;
    Ok(n)
}

/// Local to local: the kernel copies (`copy_file_range`, as `cp` does) into a hidden file
/// beside the destination, which is then renamed over it (published atomically, like every
/// other write).
fn copy_local(src: &std::path::Path, dst: &std::path::Path) -> Result<u64> {
    let dir = dst.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = dst.file_name().map_or_else(
        || std::ffi::OsString::from("file"),
        std::ffi::OsStr::to_os_string,
    );
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".tusk-tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let n = match std::fs::copy(src, &tmp) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(anyhow::Error::new(e).context(format!(
                "copying {} to {}",
                src.display(),
                dst.display()
            )));
        }
    };
    if let Err(e) = std::fs::rename(&tmp, dst) {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("publishing {}", dst.display())));
    }
    Ok(n)
}

/// An I/O error that names `loc` once: storage errors already carry their URL.
fn naming(e: std::io::Error, loc: &Location) -> anyhow::Error {
    let url = loc.url();
    if e.to_string().contains(&url) {
        anyhow::Error::new(e)
    } else {
        anyhow::Error::new(e).context(url)
    }
}
