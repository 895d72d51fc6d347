//! A client of HBase's REST gateway (`hbase rest start`, port 8080 by default): schemas,
//! gets, multi-gets, batch puts and scanners, with binary cells in protobuf.
//!
//! Every call has a timeout; connection failures and `502`/`503`/`504` (a region moving, the
//! gateway restarting) are retried with backoff until the client's retry budget is spent, then
//! reported once. A secured gateway (`hbase.rest.authentication.type = kerberos`) answers `401`
//! with `WWW-Authenticate: Negotiate`: the call is repeated once with a SPNEGO token from the
//! user's Kerberos ticket cache, and the `hadoop.auth` cookie it sets is sent afterwards, as
//! for YARN's ResourceManager.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::pb;
use tusk_yarn::error_chain as chain;

/// Errors of HBase calls; each names the gateway, and the table, row or column where known.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad address or argument.
    #[error("{0}")]
    Usage(String),
    /// The gateway did not answer (after retries).
    #[error("HBase REST gateway {url} unreachable: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What failed last.
        reason: String,
    },
    /// No such table.
    #[error("HBase table `{table}` does not exist (REST gateway {base})")]
    NoTable {
        /// The table.
        table: String,
        /// The gateway.
        base: String,
    },
    /// The table lacks a column family tusk needs.
    #[error("HBase table `{table}` has no column family `{family}` (it has: {has})")]
    NoFamily {
        /// The table.
        table: String,
        /// The family.
        family: String,
        /// The families it has.
        has: String,
    },
    /// An error answer.
    #[error("HBase {what} ({method} {url}): HTTP {status}: {message}")]
    Http {
        /// What was asked.
        what: String,
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The gateway's message (first line).
        message: String,
    },
    /// An answer tusk cannot read.
    #[error("HBase answer to {what} ({url}): {message}")]
    Protocol {
        /// What was asked.
        what: String,
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A cell that is not a value tusk can read.
    #[error("HBase table `{table}`, row `{row}`, column `{column}`: {message}")]
    Cell {
        /// The table.
        table: String,
        /// The row key.
        row: String,
        /// `family:qualifier`.
        column: String,
        /// What is wrong.
        message: String,
    },
}

/// Results of HBase calls.
pub type Result<T> = std::result::Result<T, Error>;

/// One cell as read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// `family:qualifier`.
    pub column: Vec<u8>,
    /// The timestamp (`None` on a put: the server's clock).
    pub timestamp: Option<i64>,
    /// The value.
    pub value: Vec<u8>,
}

/// One row as read or written; a read row's cells come newest first within a column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    /// The row key.
    pub key: Vec<u8>,
    /// Its cells.
    pub cells: Vec<Cell>,
}

impl Row {
    /// The row key as text (lossy), for messages.
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// A column family: name and how many versions of a cell it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The name.
    pub name: String,
    /// `VERSIONS`.
    pub versions: u32,
}

/// Client settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Limit of one HTTP exchange.
    pub timeout: Duration,
    /// How long connection failures and 502/503/504 are retried before the call fails.
    pub retry_for: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(30),
            retry_for: Duration::from_secs(60),
        }
    }
}

/// A REST gateway.
pub struct HBase {
    base: String,
    host: String,
    http: reqwest::Client,
    opts: Options,
    /// `hadoop.auth=…` from a secured gateway.
    auth_cookie: Mutex<Option<String>>,
    negotiations: AtomicUsize,
}

/// Percent-encode `b` for a URL path segment or query value (everything but unreserved
/// characters).
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

/// An answer.
struct Answer {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

const PROTOBUF: &str = "application/x-protobuf";

impl HBase {
    /// A client of the gateway at `url` (`http://HOST:PORT`).
    pub fn new(url: &str, opts: Options) -> Result<HBase> {
        let base = url.trim_end_matches('/').to_string();
        let host = reqwest::Url::parse(&base)
            .ok()
            .filter(|u| u.scheme() == "http" && u.path() == "/")
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{url}: expected the HBase REST gateway's address, http://HOST:PORT"
                ))
            })?;
        let http = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::Usage(format!("HTTP client: {}", chain(&e))))?;
        Ok(HBase {
            base,
            host,
            http,
            opts,
            auth_cookie: Mutex::new(None),
            negotiations: AtomicUsize::new(0),
        })
    }

    /// The gateway's address.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Kerberos (SPNEGO) tokens sent so far.
    pub fn negotiations(&self) -> usize {
        self.negotiations.load(Ordering::Relaxed)
    }

    fn cookie(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.auth_cookie
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One exchange, retried on connection errors and 502/503/504 until the retry budget is
    /// spent, with a Kerberos token once if the gateway asks for one.
    async fn call(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer> {
        let url = if path.starts_with("http://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let deadline = Instant::now() + self.opts.retry_for;
        let mut backoff = Duration::from_millis(50);
        let mut authorization: Option<String> = None;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("Accept", accept);
            if let Some((ct, b)) = &body {
                req = req.header("Content-Type", *ct).body(b.clone());
            }
            if let Some(a) = &authorization {
                req = req.header("Authorization", a);
            }
            if let Some(c) = self.cookie().as_deref() {
                req = req.header("Cookie", c);
            }
            let sent = async {
                let r = req.send().await?;
                let status = r.status().as_u16();
                let negotiate = r.headers().get_all("WWW-Authenticate").iter().any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.trim_start().to_ascii_lowercase().starts_with("negotiate"))
                });
                let cookies: Vec<Option<String>> = r
                    .headers()
                    .get_all("Set-Cookie")
                    .iter()
                    .filter_map(|v| {
                        v.to_str()
                            .ok()
                            .and_then(tusk_yarn::spnego::hadoop_auth_cookie)
                    })
                    .collect();
                let location = r
                    .headers()
                    .get("Location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = r.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>((status, negotiate, cookies, location, body))
            }
            .await;
            let retry_reason = match sent {
                Ok((status, negotiate, cookies, location, body)) => {
                    if let Some(c) = cookies.into_iter().last() {
                        *self.cookie() = c;
                    }
                    if status == 401 && negotiate && authorization.is_none() {
                        let token = tusk_yarn::spnego::authorization(&self.host).map_err(|m| {
                            Error::Http {
                                what: "Kerberos (SPNEGO) authentication".into(),
                                method: method.to_string(),
                                url: url.clone(),
                                status,
                                message: m,
                            }
                        })?;
                        self.negotiations.fetch_add(1, Ordering::Relaxed);
                        authorization = Some(token);
                        continue;
                    }
                    if matches!(status, 502..=504) {
                        format!("HTTP {status}: {}", first_line(&body))
                    } else {
                        return Ok(Answer {
                            status,
                            location,
                            body,
                        });
                    }
                }
                Err(e) => chain(&e),
            };
            let now = Instant::now();
            if now + backoff > deadline {
                return Err(Error::Unreachable {
                    url,
                    reason: retry_reason,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    fn http_error(&self, what: &str, method: &Method, path: &str, a: &Answer) -> Error {
        Error::Http {
            what: what.into(),
            method: method.to_string(),
            url: format!("{}{path}", self.base),
            status: a.status,
            message: first_line(&a.body),
        }
    }

    /// The cluster's HBase version (`/version/cluster`): a cheap liveness check.
    pub async fn version(&self) -> Result<String> {
        let a = self
            .call(Method::GET, "/version/cluster", "text/plain", None)
            .await?;
        if a.status != 200 {
            return Err(self.http_error("version", &Method::GET, "/version/cluster", &a));
        }
        Ok(String::from_utf8_lossy(&a.body).trim().to_string())
    }

    /// A table's column families, `None` when there is no such table.
    pub async fn describe(&self, table: &str) -> Result<Option<Vec<Family>>> {
        let path = format!("/{}/schema", escape(table.as_bytes()));
        let a = self
            .call(Method::GET, &path, "application/json", None)
            .await?;
        match a.status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.http_error("describe table", &Method::GET, &path, &a)),
        }
        let bad = |m: &str| Error::Protocol {
            what: "describe table".into(),
            url: format!("{}{path}", self.base),
            message: m.into(),
        };
        let v: Value = serde_json::from_slice(&a.body).map_err(|e| bad(&e.to_string()))?;
        let fams = v["ColumnSchema"]
            .as_array()
            .ok_or_else(|| bad("no ColumnSchema"))?;
        fams.iter()
            .map(|f| {
                let name = f["name"]
                    .as_str()
                    .ok_or_else(|| bad("a family without a name"))?;
                let versions = match &f["VERSIONS"] {
                    Value::String(s) => s.parse().ok(),
                    Value::Number(n) => n.as_u64().map(|n| n as u32),
                    _ => None,
                }
                .unwrap_or(1);
                Ok(Family {
                    name: name.to_string(),
                    versions,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Create `table` with `families` (an error if the gateway refuses, e.g. it exists).
    pub async fn create_table(&self, table: &str, families: &[Family]) -> Result<()> {
        let path = format!("/{}/schema", escape(table.as_bytes()));
        let body = json!({
            "name": table,
            "ColumnSchema": families
                .iter()
                .map(|f| json!({ "name": f.name, "VERSIONS": f.versions.to_string() }))
                .collect::<Vec<_>>(),
        });
        let a = self
            .call(
                Method::PUT,
                &path,
                "application/json",
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await?;
        if !matches!(a.status, 200 | 201) {
            return Err(self.http_error("create table", &Method::PUT, &path, &a));
        }
        Ok(())
    }

    /// Drop `table` (nothing when it does not exist).
    pub async fn delete_table(&self, table: &str) -> Result<()> {
        let path = format!("/{}/schema", escape(table.as_bytes()));
        let a = self.call(Method::DELETE, &path, "*/*", None).await?;
        if !matches!(a.status, 200 | 404) {
            return Err(self.http_error("delete table", &Method::DELETE, &path, &a));
        }
        Ok(())
    }

    /// The rows of `keys` that exist, each with up to `versions` versions per column, in one
    /// request per URL-sized chunk of keys. Missing rows are left out; a missing table is
    /// [`Error::NoTable`].
    pub async fn multi_get(&self, table: &str, keys: &[&[u8]], versions: u32) -> Result<Vec<Row>> {
        let mut out = Vec::new();
        let t = escape(table.as_bytes());
        let mut i = 0;
        while i < keys.len() {
            // Jetty's default request header limit is 8 KiB: stay well under it.
            let mut path = format!("/{t}/multiget?v={}", versions.max(1));
            let first = i;
            while i < keys.len() && (i == first || path.len() < 6000) {
                path.push_str("&row=");
                path.push_str(&escape(keys[i]));
                i += 1;
            }
            let a = self.call(Method::GET, &path, PROTOBUF, None).await?;
            match a.status {
                200 => out.extend(self.cell_set(&path, &a.body)?),
                // No row found, or no table: tell them apart once.
                404 => {
                    if self.describe(table).await?.is_none() {
                        return Err(Error::NoTable {
                            table: table.into(),
                            base: self.base.clone(),
                        });
                    }
                }
                _ => return Err(self.http_error("multi-get", &Method::GET, &path, &a)),
            }
        }
        Ok(out)
    }

    /// One row (`None` when it does not exist).
    pub async fn get(&self, table: &str, key: &[u8], versions: u32) -> Result<Option<Row>> {
        Ok(self
            .multi_get(table, &[key], versions)
            .await?
            .into_iter()
            .next())
    }

    fn cell_set(&self, path: &str, body: &[u8]) -> Result<Vec<Row>> {
        let set = pb::CellSet::decode(body).map_err(|e| Error::Protocol {
            what: "cells".into(),
            url: format!("{}{path}", self.base),
            message: format!("not a protobuf CellSet: {e}"),
        })?;
        Ok(set
            .rows
            .into_iter()
            .map(|r| Row {
                key: r.key,
                cells: r
                    .values
                    .into_iter()
                    .map(|c| Cell {
                        column: c.column.unwrap_or_default(),
                        timestamp: c.timestamp,
                        value: c.data.unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect())
    }

    /// Write `rows` in one request (HBase applies the puts of one request row by row).
    pub async fn put(&self, table: &str, rows: &[Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let set = pb::CellSet {
            rows: rows
                .iter()
                .map(|r| pb::Row {
                    key: r.key.clone(),
                    values: r
                        .cells
                        .iter()
                        .map(|c| pb::Cell {
                            row: None,
                            column: Some(c.column.clone()),
                            timestamp: c.timestamp,
                            data: Some(c.value.clone()),
                        })
                        .collect(),
                })
                .collect(),
        };
        // The row in the path is ignored for a CellSet body (each row names its own key).
        let path = format!("/{}/batch", escape(table.as_bytes()));
        let a = self
            .call(
                Method::PUT,
                &path,
                "*/*",
                Some((PROTOBUF, set.encode_to_vec())),
            )
            .await?;
        match a.status {
            200 | 201 => Ok(()),
            404 if self.describe(table).await?.is_none() => Err(Error::NoTable {
                table: table.into(),
                base: self.base.clone(),
            }),
            _ => Err(self.http_error(
                &format!("put of {} rows into `{table}`", rows.len()),
                &Method::PUT,
                &path,
                &a,
            )),
        }
    }

    /// Every row from `start` (inclusive) to `end` (exclusive; empty: to the end of the table),
    /// handed to `each` a batch at a time; the scanner is closed afterwards.
    pub async fn scan(
        &self,
        table: &str,
        start: &[u8],
        end: &[u8],
        versions: u32,
        mut each: impl FnMut(Vec<Row>) -> Result<()>,
    ) -> Result<()> {
        let spec = pb::Scanner {
            start_row: (!start.is_empty()).then(|| start.to_vec()),
            end_row: (!end.is_empty()).then(|| end.to_vec()),
            columns: Vec::new(),
            batch: Some(10_000),
            max_versions: Some(versions.max(1) as i32),
        };
        let path = format!("/{}/scanner", escape(table.as_bytes()));
        let a = self
            .call(
                Method::PUT,
                &path,
                "*/*",
                Some((PROTOBUF, spec.encode_to_vec())),
            )
            .await?;
        match a.status {
            201 => {}
            404 => {
                return Err(Error::NoTable {
                    table: table.into(),
                    base: self.base.clone(),
                });
            }
            _ => return Err(self.http_error("open a scanner", &Method::PUT, &path, &a)),
        }
        let loc = a.location.ok_or_else(|| Error::Protocol {
            what: "open a scanner".into(),
            url: format!("{}{path}", self.base),
            message: "no Location header".into(),
        })?;
        let result = async {
            loop {
                let a = self.call(Method::GET, &loc, PROTOBUF, None).await?;
                match a.status {
                    200 => each(self.cell_set(&loc, &a.body)?)?,
                    204 => return Ok(()),
                    _ => return Err(self.http_error("scan", &Method::GET, &loc, &a)),
                }
            }
        }
        .await;
        let _ = self.call(Method::DELETE, &loc, "*/*", None).await;
        result
    }
}

/// The first line of an answer body, for messages (HBase's errors are Java exception text).
fn first_line(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body);
    let line = t
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut s: String = line.chars().take(300).collect();
    if s.is_empty() {
        s = "(empty answer)".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_for_paths_and_queries() {
        assert_eq!(escape(b"user_id:42"), "user_id%3A42");
        assert_eq!(escape(b"a b/\xff"), "a%20b%2F%FF");
        assert_eq!(escape(b"A-z_0.~"), "A-z_0.~");
    }

    #[test]
    fn addresses_other_than_http_host_port_are_refused() {
        for bad in ["https://h:8080", "h:8080", "http://h:8080/table"] {
            let e = HBase::new(bad, Options::default()).err().unwrap();
            assert!(e.to_string().contains("http://HOST:PORT"), "{e}");
        }
        assert!(HBase::new("http://h:8080/", Options::default()).is_ok());
    }
}
