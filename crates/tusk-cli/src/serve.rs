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
    let server = Arc::new(Server::new(
        registry,
        Limits {
            max_body: a.max_body,
            max_instances: a.max_instances,
            token,
            access_log: a.access_log,
        },
        batching,
    ));
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
