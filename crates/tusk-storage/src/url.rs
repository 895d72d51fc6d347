//! Parsing of storage URLs (kept apart so it can be tested exhaustively).

use object_store::path::Path;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Local,
    Memory,
    Hdfs,
    WebHdfs,
    S3,
    Azure,
}

#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub scheme: Scheme,
    /// `host:port` (may be empty for local and `hdfs:///`).
    pub authority: String,
    /// Key identifying the store: `scheme://authority`, or empty for local.
    pub base: String,
    /// The path inside the store, without a leading `/`.
    pub path: Path,
    /// The path as written (absolute for local), before glob handling.
    pub raw_path: String,
}

impl Parsed {
    /// The URL of the same store with another absolute path.
    pub fn with_raw_path(&self, raw: &str) -> String {
        match self.scheme {
            Scheme::Local => raw.to_string(),
            _ => format!("{}{}", self.base, raw),
        }
    }
}

const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];

/// Split an absolute path at the first segment holding a glob character:
/// `/logs/date=*/x.csv` → (`/logs`, `date=*/x.csv`). `None` when there is no glob.
pub(crate) fn split_glob(raw: &str) -> Option<(String, String)> {
    let idx = raw.find(GLOB_CHARS)?;
    let cut = raw[..idx].rfind('/').unwrap_or(0);
    let prefix = if cut == 0 { "/" } else { &raw[..cut] };
    Some((
        prefix.to_string(),
        raw[cut..].trim_start_matches('/').to_string(),
    ))
}

pub(crate) fn parse(url: &str) -> Result<Parsed> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.into(),
        reason: reason.into(),
    };
    if url.trim().is_empty() {
        return Err(invalid("empty URL"));
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) => (s.to_ascii_lowercase(), Some(rest)),
        None => (String::new(), None),
    };
    let Some(rest) = rest else {
        // A bare path: local, relative to the working directory.
        let abs = if std::path::Path::new(url).is_absolute() {
            std::path::PathBuf::from(url)
        } else {
            std::env::current_dir()
                .map_err(|e| invalid(&format!("cannot resolve a relative path: {e}")))?
                .join(url)
        };
        return local(url, &abs.to_string_lossy());
    };
    let (authority, raw_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    match scheme.as_str() {
        "file" => {
            if !(authority.is_empty() || authority == "localhost") {
                return Err(invalid(
                    "file:// URLs name a local path: use file:///absolute/path",
                ));
            }
            local(url, raw_path)
        }
        "memory" | "hdfs" | "webhdfs" => {
            let scheme_enum = match scheme.as_str() {
                "memory" => Scheme::Memory,
                "hdfs" => Scheme::Hdfs,
                _ => Scheme::WebHdfs,
            };
            if authority.is_empty() && scheme_enum != Scheme::Hdfs {
                return Err(invalid(&format!(
                    "missing host: expected {scheme}://host:port/path"
                )));
            }
            let authority = match scheme_enum {
                Scheme::WebHdfs if !authority.contains(':') => format!("{authority}:9870"),
                _ => authority.to_string(),
            };
            if let Some(port) = authority.rsplit_once(':').map(|(_, p)| p)
                && scheme_enum != Scheme::Memory
                && port.parse::<u16>().is_err()
            {
                return Err(invalid(&format!("bad port '{port}'")));
            }
            Ok(Parsed {
                scheme: scheme_enum,
                base: format!("{scheme}://{authority}"),
                authority,
                path: store_path(url, raw_path)?,
                raw_path: raw_path.to_string(),
            })
        }
        "s3" | "s3a" => {
            // The authority is a bucket name (S3's rules: 3-63 lower-case letters, digits,
            // dots and hyphens).
            let ok = (3..=63).contains(&authority.len())
                && authority
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
            if !ok {
                return Err(invalid(&format!(
                    "'{authority}' is not an S3 bucket name: expected s3://bucket/path"
                )));
            }
            Ok(Parsed {
                scheme: Scheme::S3,
                base: format!("s3://{authority}"),
                authority: authority.to_string(),
                path: store_path(url, raw_path)?,
                raw_path: raw_path.to_string(),
            })
        }
        "az" | "azure" | "abfs" | "abfss" => {
            // az://container/path (the account from AZURE_STORAGE_ACCOUNT_NAME), or
            // abfs[s]://container@account.dfs.core.windows.net/path as Hadoop's ABFS writes it.
            let (container, host) = match authority.split_once('@') {
                Some((c, h)) => (c, Some(h)),
                None => (authority, None),
            };
            let ok = (3..=63).contains(&container.len())
                && container
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(invalid(&format!(
                    "'{container}' is not an Azure container name: expected az://container/path \
                     or abfs://container@account.dfs.core.windows.net/path"
                )));
            }
            if matches!(scheme.as_str(), "abfs" | "abfss") && host.is_none() {
                return Err(invalid(
                    "expected abfs://container@account.dfs.core.windows.net/path",
                ));
            }
            Ok(Parsed {
                scheme: Scheme::Azure,
                base: format!("{scheme}://{authority}"),
                authority: authority.to_string(),
                path: store_path(url, raw_path)?,
                raw_path: raw_path.to_string(),
            })
        }
        "gs" | "gcs" => Err(invalid(
            "gs:// is not supported: Google Cloud Storage could not be tested here (the one \
             emulator installable from the package registries, fake-gcs-server, lacks the \
             multipart upload API tusk streams writes with); see the README's Storage section",
        )),
        "adl" | "wasb" | "wasbs" => Err(invalid(&format!(
            "'{scheme}://' is not supported (a retired Azure driver): use abfs:// or az://"
        ))),
        other => Err(invalid(&format!(
            "unsupported scheme '{other}': expected a local path, file://, hdfs://, webhdfs://, s3://, az://, abfs:// or memory://"
        ))),
    }
}

fn local(url: &str, abs: &str) -> Result<Parsed> {
    let normalised = normalise(abs);
    Ok(Parsed {
        scheme: Scheme::Local,
        authority: String::new(),
        base: String::new(),
        path: store_path(url, &normalised)?,
        raw_path: normalised,
    })
}

/// Resolve `.` and `..` lexically and drop empty segments; result starts with `/`.
fn normalise(abs: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in abs.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn store_path(url: &str, raw: &str) -> Result<Path> {
    let cleaned = normalise(raw);
    Path::parse(cleaned.trim_start_matches('/')).map_err(|e| Error::InvalidUrl {
        url: url.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let p = parse("hdfs://nn:8020/a/b").unwrap();
        assert_eq!(p.scheme, Scheme::Hdfs);
        assert_eq!(p.base, "hdfs://nn:8020");
        assert_eq!(p.path.as_ref(), "a/b");
        let p = parse("hdfs:///a").unwrap();
        assert_eq!((p.authority.as_str(), p.path.as_ref()), ("", "a"));
        let p = parse("webhdfs://nn/x").unwrap();
        assert_eq!(p.authority, "nn:9870");
        let p = parse("file:///tmp/./x/../y").unwrap();
        assert_eq!((p.scheme, p.path.as_ref()), (Scheme::Local, "tmp/y"));
        let p = parse("/tmp/z").unwrap();
        assert_eq!(p.path.as_ref(), "tmp/z");
        let p = parse("memory://t/a").unwrap();
        assert_eq!((p.base.as_str(), p.path.as_ref()), ("memory://t", "a"));
        let p = parse("s3://my-bucket/a/b.parquet").unwrap();
        assert_eq!((p.scheme, p.base.as_str()), (Scheme::S3, "s3://my-bucket"));
        assert_eq!(p.path.as_ref(), "a/b.parquet");
        let p = parse("abfss://data@acct.dfs.core.windows.net/a/b").unwrap();
        assert_eq!(
            (p.scheme, p.authority.as_str()),
            (Scheme::Azure, "data@acct.dfs.core.windows.net")
        );
        assert_eq!(p.path.as_ref(), "a/b");
        let p = parse("az://data/x").unwrap();
        assert_eq!((p.base.as_str(), p.path.as_ref()), ("az://data", "x"));
        let rel = parse("rel/x").unwrap();
        assert!(rel.raw_path.ends_with("/rel/x"));
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        for (url, needle) in [
            ("ftp://h/k", "unsupported scheme 'ftp'"),
            ("gs://b/k", "gs:// is not supported"),
            ("wasb://b/k", "use abfs:// or az://"),
            ("s3://Bad_Bucket/k", "not an S3 bucket name"),
            ("s3:///k", "not an S3 bucket name"),
            ("az://A_B/k", "not an Azure container name"),
            ("abfs://data/k", "expected abfs://container@account"),
            ("webhdfs:///x", "missing host"),
            ("hdfs://nn:port/x", "bad port"),
            ("file://host/x", "file:///absolute"),
            ("", "empty URL"),
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn splits_globs() {
        assert_eq!(
            split_glob("/logs/date=*/p.csv"),
            Some(("/logs".into(), "date=*/p.csv".into()))
        );
        assert_eq!(split_glob("/*.csv"), Some(("/".into(), "*.csv".into())));
        assert_eq!(split_glob("/a/b"), None);
    }
}
