//! The client side: `--cluster df://HOST:PORT`, the scheduler check, and SQL sessions whose
//! queries run on the cluster.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::functions_table::generate_series::GenerateSeriesTable;
use tusk_preprocess::sql::{Remote, SqlSession};
use tusk_storage::Storage;

use crate::codec::TuskCodec;
use crate::{Error, Result};

/// A Ballista scheduler, as `--cluster df://HOST:PORT` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Host name or address.
    pub host: String,
    /// gRPC port (Ballista's default is 50050).
    pub port: u16,
}

impl Cluster {
    /// Parse `df://HOST:PORT` (`df://HOST` means port 50050).
    pub fn parse(url: &str) -> Result<Cluster> {
        let bad = |message: &str| Error::ClusterUrl {
            url: url.into(),
            message: message.into(),
        };
        let rest = url
            .strip_prefix("df://")
            .ok_or_else(|| bad("expected df://HOST:PORT (a Ballista scheduler)"))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(bad("expected df://HOST:PORT (a Ballista scheduler)"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad(&format!("'{p}' is not a port number")))?,
            ),
            Some(_) => return Err(bad("no host before the port")),
            None => (rest, 50050),
        };
        Ok(Cluster {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
        })
    }

    /// `df://HOST:PORT`.
    pub fn name(&self) -> String {
        format!("df://{}:{}", self.host, self.port)
    }

    fn scheduler_url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// Ask the scheduler what it is (its health route names Ballista's and DataFusion's
    /// versions in the `Server` and `X-Powered-By` headers) and refuse one whose Ballista
    /// major version differs from this build's: plans of another major version can decode
    /// and mean something else. Returns the scheduler's Ballista version.
    pub fn check(&self, timeout: Duration) -> Result<String> {
        let fail = |message: String| Error::Scheduler {
            cluster: self.name(),
            message,
        };
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            fail(format!(
                "no SQL scheduler answers ({}); start one with `tusk sql-scheduler --bind {}:{}`",
                last.map_or_else(|| "no address".to_string(), |e| e.to_string()),
                self.host,
                self.port
            ))
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| fail(e.to_string()))?;
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
            self.host, self.port
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| fail(format!("sending the version check: {e}")))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => {
                    return Err(fail(format!(
                        "no answer to the version check within {timeout:?} ({e}): is this a Ballista scheduler?"
                    )));
                }
            }
        }
        let head = String::from_utf8_lossy(&head);
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let server = header("server").unwrap_or_default();
        let Some(version) = server.strip_prefix("ballista/") else {
            return Err(fail(format!(
                "it answered, but not as a Ballista scheduler (Server: '{server}'); point --cluster at `tusk sql-scheduler`"
            )));
        };
        let datafusion = header("x-powered-by").unwrap_or_default();
        if version.split('.').next() != crate::BALLISTA_VERSION.split('.').next() {
            return Err(fail(format!(
                "the scheduler runs Ballista {version} ({datafusion}); this tusk speaks Ballista {} (datafusion/{}): the client, the scheduler and the executors must share Ballista's major version (run the same tusk everywhere)",
                crate::BALLISTA_VERSION,
                crate::DATAFUSION_VERSION
            )));
        }
        Ok(version.to_string())
    }
}

/// A SQL session whose queries run on `cluster` (checked first, see [`Cluster::check`]).
/// `CREATE TABLE … AS` results go under `scratch` (a directory the executors and the
/// scheduler can reach, removed when the session ends); `range()` and `generate_series()`
/// are computed here and travel inside the plan (at most
/// [`crate::codec::MAX_PLAN_TABLE_BYTES`]).
pub fn session(
    storage: &Storage,
    cluster: &Cluster,
    partitions: usize,
    scratch: &str,
) -> Result<SqlSession> {
    cluster.check(Duration::from_secs(10))?;
    let url = cluster.scheduler_url();
    let remote = Remote {
        scratch: scratch.to_string(),
        name: cluster.name(),
    };
    Ok(SqlSession::remote(storage, partitions, remote, |state| {
        let mut config = state
            .config()
            .clone()
            .with_ballista_logical_extension_codec(Arc::new(TuskCodec::default()))
            .with_ballista_job_name("tusk sql");
        // Ballista 55.0's scheduler re-runs join selection on stages whose hash joins already
        // carry dynamic filters, and DataFusion refuses to swap such a join: the task status
        // update fails and the job never ends (seen with the clickstream pipeline). Without
        // join dynamic filters the plans are the same as before DataFusion 52 had them.
        let o = &mut config.options_mut().optimizer;
        o.enable_dynamic_filter_pushdown = false;
        o.enable_join_dynamic_filter_pushdown = false;
        o.enable_topk_dynamic_filter_pushdown = false;
        o.enable_aggregate_dynamic_filter_pushdown = false;
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build();
        let mut state: SessionState = state.upgrade_for_ballista(url)?;
        for name in ["range", "generate_series"] {
            if let Some(f) = state.table_functions().get(name).cloned() {
                state.register_udtf(
                    name,
                    Arc::new(Materialised {
                        inner: f.function().clone(),
                    }),
                );
            }
        }
        Ok(state)
    })?)
}

/// The most rows `range()` / `generate_series()` may produce on a cluster.
const MAX_SERIES_ROWS: usize = 1 << 20;

/// A table function whose series is computed when the query is planned, as an in-memory
/// table the plan carries (DataFusion's series tables have no wire form).
#[derive(Debug)]
struct Materialised {
    inner: Arc<dyn TableFunctionImpl>,
}

impl TableFunctionImpl for Materialised {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let provider = self.inner.call_with_args(args)?;
        let Some(series) = provider.downcast_ref::<GenerateSeriesTable>() else {
            return Ok(provider);
        };
        let generator = series.as_generator(8192)?;
        let mut batches = Vec::new();
        let mut rows = 0;
        while let Some(b) = generator.write().generate_next_batch()? {
            rows += b.num_rows();
            if rows > MAX_SERIES_ROWS {
                return Err(DataFusionError::Plan(format!(
                    "a series of over {MAX_SERIES_ROWS} rows cannot be sent to the cluster; read the values from a table instead"
                )));
            }
            batches.push(b);
        }
        Ok(Arc::new(MemTable::try_new(series.schema(), vec![batches])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert_eq!(
            Cluster::parse("df://sched:50070").unwrap(),
            Cluster {
                host: "sched".into(),
                port: 50070
            }
        );
        assert_eq!(Cluster::parse("df://sched").unwrap().port, 50050);
        for bad in [
            "http://x:1",
            "df://",
            "df://x:notaport",
            "df://:1",
            "df://x:1/path",
        ] {
            let e = Cluster::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn an_unreachable_scheduler_is_named() {
        // a port nothing listens on
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Cluster::parse(&format!("df://127.0.0.1:{port}")).unwrap();
        let e = c.check(Duration::from_secs(2)).unwrap_err().to_string();
        assert!(e.contains(&format!("df://127.0.0.1:{port}")), "{e}");
        assert!(e.contains("no SQL scheduler answers"), "{e}");
    }
}
