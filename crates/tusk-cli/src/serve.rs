//! `tusk serve`: glue over `tusk-serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tusk_serve::batching::BatchOptions;
use tusk_serve::{Limits, Registry, Server, VersionPolicy, model_specs};
use tusk_storage::Storage;

/// Serve stored model versions over HTTP.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model to serve: NAME=URL, or URL alone (named after its last path segment). Repeat
    /// for several models.
    #[arg(long = "model", required = true, value_name = "NAME=URL")]
    models: Vec<String>,
    /// Address to listen on. Anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:8501")]
    addr: SocketAddr,
    /// Which committed versions to serve: latest, all, or specific:3,5.
    #[arg(long, default_value = "latest")]
    version_policy: String,
    /// A version label, [MODEL:]NAME=VERSION (e.g. stable=5), for …/labels/NAME:predict.
    #[arg(long = "label", value_name = "[MODEL:]NAME=VERSION")]
    labels: Vec<String>,
    /// Seconds between looks at the model stores for new versions.
    #[arg(long, default_value_t = 5.0)]
    poll_interval: f64,
    /// File holding the bearer token clients must send (else $TUSK_SERVE_TOKEN).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 16 << 20)]
    max_body: usize,
    /// Most rows in one request (400 above).
    #[arg(long, default_value_t = 10_000)]
    max_instances: usize,
    /// Print one JSON line per request on stderr.
    #[arg(long)]
    access_log: bool,
    /// Dynamic batching: score concurrent predict requests together, up to this many rows
    /// (0: off, every request scored on its own).
    #[arg(long, default_value_t = 0)]
    max_batch: usize,
    /// With --max-batch: how long the first request of a batch waits for others, milliseconds.
    #[arg(long, default_value_t = 1.0)]
    batch_timeout: f64,
    /// Serve HTTPS with this certificate chain (PEM; with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1; with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Live entity features from HBase (hbase://HOST:PORT/TABLE, HOST:PORT being the REST
    /// gateway, the table as `tusk export hbase` lays it out): the columns a request lacks are
    /// read from the rows of the entities it names, one multi-get per request, instead of the
    /// version's tables. A lookup that fails or runs over --features-budget is answered from
    /// the version's tables (header x-tusk-features: fallback).
    #[arg(long, value_name = "hbase://HOST:PORT/TABLE")]
    features: Option<String>,
    /// With --features: how long a request waits for HBase, milliseconds.
    #[arg(long, default_value_t = 50.0)]
    features_budget: f64,
    /// With --features: seconds a looked-up row (or its absence) is reused (0: every request
    /// reads HBase).
    #[arg(long, default_value_t = 0.0)]
    features_ttl: f64,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            Some(tusk_serve::Tls::from_pem_files(c, k).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let policy: VersionPolicy = a
        .version_policy
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--version-policy: {e}"))?;
    let specs = model_specs(&a.models, &a.labels).map_err(anyhow::Error::msg)?;
    if !(a.poll_interval.is_finite() && a.poll_interval > 0.0) {
        bail!("--poll-interval must be a positive number of seconds");
    }
    let token = match &a.token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("--token-file {}", p.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!("--token-file {}: the file is empty", p.display());
            }
            Some(t)
        }
        None => std::env::var("TUSK_SERVE_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
    };
    for s in &specs {
        eprintln!("model {} ← {}", s.name, s.url);
    }
    let registry = Registry::new(Storage::new()?, specs, policy, |l| eprintln!("{l}"));
    if !(a.batch_timeout.is_finite() && a.batch_timeout >= 0.0) {
        bail!("--batch-timeout must be a non-negative number of milliseconds");
    }
    let batching = (a.max_batch > 0).then(|| BatchOptions {
        max_batch: a.max_batch,
        timeout: Duration::from_secs_f64(a.batch_timeout / 1e3),
    });
    let mut server = Server::new(
        registry,
        Limits {
            max_body: a.max_body,
            max_instances: a.max_instances,
            token,
            access_log: a.access_log,
        },
        batching,
    );
    if let Some(url) = &a.features {
        if !(a.features_budget.is_finite() && a.features_budget > 0.0) {
            bail!("--features-budget must be a positive number of milliseconds");
        }
        if !(a.features_ttl.is_finite() && a.features_ttl >= 0.0) {
            bail!("--features-ttl must be a non-negative number of seconds");
        }
        let store = tusk_hbase::online::Online::new(
            url,
            Duration::from_secs_f64(a.features_budget / 1e3),
            Duration::from_secs_f64(a.features_ttl),
        )
        .map_err(|e| anyhow::anyhow!("--features {e}"))?;
        eprintln!(
            "features ← {url} (budget {} ms, cache {} s)",
            a.features_budget, a.features_ttl
        );
        server = server.with_features(store);
    }
    let server = Arc::new(server);
    let stop = tusk_serve::start_polling(&server, Duration::from_secs_f64(a.poll_interval));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    eprintln!(
        "serving on {}://{} (TF Serving REST under /v1, Open Inference Protocol under /v2, metrics at /metrics)",
        if tls.is_some() { "https" } else { "http" },
        a.addr
    );
    let r = rt.block_on(tusk_serve::serve(&server, a.addr, tls));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    r?;
    Ok(())
}
