//! `tusk serve`: committed model versions answer over HTTP in the two protocols the serving
//! world speaks — TF Serving's REST API (v1) and the Open Inference Protocol (v2, KServe /
//! Triton) — with hot reload from the model store (any storage), Prometheus metrics, bearer
//! tokens and request limits.
//!
//! [`app`] builds the router over a [`Server`] (tested without a socket); [`serve`] binds it.

pub mod batching;
pub mod features;
pub mod metrics;
pub mod recommend;
pub mod registry;
pub mod rows;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use registry::{Entry, State as VState, Want};
pub use registry::{ModelSpec, Registry, VersionPolicy};
use rows::{ReqRow, Val};

/// Limits and access control of a server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, bytes (413 above).
    pub max_body: usize,
    /// Most rows in one request (400 above).
    pub max_instances: usize,
    /// Bearer token every request but the health probes must carry.
    pub token: Option<String>,
    /// Print one JSON line per request to stderr.
    pub access_log: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 16 << 20,
            max_instances: 10_000,
            token: None,
            access_log: false,
        }
    }
}

/// What the handlers share.
pub struct Server {
    /// Models and their loaded versions.
    pub registry: Arc<Registry>,
    /// Limits.
    pub limits: Limits,
    /// Request metrics.
    pub metrics: metrics::Metrics,
    /// Dynamic batching of predict requests, when on.
    pub batcher: Option<batching::Batcher>,
    /// Live entity features (`--features hbase://…`), when on.
    pub features: Option<Arc<tusk_hbase::online::Online>>,
}

impl Server {
    /// A server over `registry` with `limits`, batching when `batching` is given.
    pub fn new(
        registry: Registry,
        limits: Limits,
        batching: Option<batching::BatchOptions>,
    ) -> Server {
        Server {
            registry: Arc::new(registry),
            limits,
            metrics: metrics::Metrics::default(),
            batcher: batching.map(batching::Batcher::start),
            features: None,
        }
    }

    /// Fill the columns requests lack from `store` (see [`features`]).
    pub fn with_features(mut self, store: tusk_hbase::online::Online) -> Server {
        self.features = Some(Arc::new(store));
        self
    }

    /// The columns `rows` lack, from the live feature store when there is one.
    async fn fill(
        &self,
        sc: &tusk_train::Scorer,
        rows: &mut [ReqRow],
        also: &[&str],
    ) -> Result<Option<features::Source>, ApiError> {
        match &self.features {
            None => Ok(None),
            Some(store) => features::fill(store, sc, rows, also)
                .await
                .map(Some)
                .map_err(|m| err(StatusCode::BAD_GATEWAY, m)),
        }
    }

    /// Probabilities of a request's rows (400 above the row limit or for a bad row).
    async fn score(
        &self,
        sc: &Arc<tusk_train::Scorer>,
        rows: Vec<ReqRow>,
    ) -> Result<Vec<f32>, ApiError> {
        let bad = |m: String| err(StatusCode::BAD_REQUEST, m);
        if rows.len() > self.limits.max_instances {
            return Err(bad(format!(
                "{} rows in one request, over the limit of {}",
                rows.len(),
                self.limits.max_instances
            )));
        }
        match &self.batcher {
            Some(b) => b.score(sc.clone(), rows).await,
            None => rows::score(sc, &rows),
        }
        .map_err(bad)
    }
}

/// Labels a handler attaches to its response for the metrics and the access log.
#[derive(Clone)]
struct Served {
    model: String,
    version: String,
    api: &'static str,
}

/// The router: TF Serving v1 under `/v1/models/…`, Open Inference Protocol v2 under `/v2…`,
/// Prometheus text at `/metrics`.
pub fn app(server: Arc<Server>) -> Router {
    Router::new()
        .route("/v1/models/{*rest}", get(v1_get).post(v1_post))
        .route("/v2", get(v2_server))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(v2_ready))
        .route("/v2/models/{*rest}", get(v2_get).post(v2_post))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { err(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(middleware::from_fn_with_state(server.clone(), observe))
        .with_state(server)
}

/// Server-side TLS: a certificate chain and its private key, from PEM files.
#[derive(Clone)]
pub struct Tls(tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Read `cert` (PEM: the certificate, then any intermediates) and `key` (PEM: PKCS#8,
    /// PKCS#1 or SEC1); the error names the file and what is wrong with it.
    pub fn from_pem_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Tls, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "--tls-cert {}: no CERTIFICATE in the file",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// Serve `server` on `addr` until Ctrl-C / SIGTERM, over TLS when `tls` is given. Refuses a
/// non-loopback address without a token. The caller keeps its `Arc`: the server owns storage
/// clients with runtimes of their own, which must not be dropped inside this future.
pub async fn serve(
    server: &Arc<Server>,
    addr: SocketAddr,
    tls: Option<Tls>,
) -> std::io::Result<()> {
    let listener = bind(server, addr).await?;
    serve_on(server, listener, tls, shutdown_signal()?).await
}

/// Check the token rule and listen on `addr`.
pub async fn bind(server: &Server, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() && server.limits.token.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{addr} is reachable from other hosts: give a token (--token-file or TUSK_SERVE_TOKEN), or bind 127.0.0.1"
            ),
        ));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Ctrl-C or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| std::io::Error::new(e.kind(), format!("installing a SIGTERM handler: {e}")))?;
    Ok(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    })
}

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest in-flight TLS connections get to finish once `shutdown` fires.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve on `listener` until `shutdown` completes. Plain HTTP goes through `axum::serve`; with
/// TLS each connection gets its handshake (bounded by a timeout) on a task of its own, so a
/// slow client never holds up the others, then hyper serves it; at shutdown, new connections
/// stop and open ones finish their current request (for up to 10 s).
pub fn serve_on(
    server: &Arc<Server>,
    listener: tokio::net::TcpListener,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
    let router = app(server.clone());
    async move {
        match tls {
            None => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(Tls(acceptor)) => serve_tls(listener, router, acceptor, shutdown).await,
        }
    }
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                // Out of file descriptors and the like: keep serving the open connections.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (acceptor, router, mut stop) = (acceptor.clone(), router.clone(), stop_rx.clone());
        conns.spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections so the set does not grow with the server's age.
        while conns.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Start polling the store every `interval` (first poll at once); set the flag to stop.
pub fn start_polling(server: &Server, interval: Duration) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    server.registry.watch(interval, stop.clone());
    stop
}

/// A 4xx/5xx answer: `{"error": "…"}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn err(code: StatusCode, message: String) -> ApiError {
    ApiError(code, message)
}

fn with_version(mut r: Response, model: &str, version: u64, api: &'static str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        r.headers_mut().insert("x-model-version", v);
    }
    r.extensions_mut().insert(Served {
        model: model.to_string(),
        version: version.to_string(),
        api,
    });
    r
}

/// Say where the entity columns came from (`x-tusk-features`), when a store is configured.
fn with_features(mut r: Response, source: Option<features::Source>) -> Response {
    if let Some(src) = source {
        r.headers_mut()
            .insert("x-tusk-features", HeaderValue::from_static(src.header()));
    }
    r
}

/// Auth, then the request; then metrics and the access log.
async fn observe(State(s): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let t = Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let open = path.starts_with("/v2/health/");
    let resp = if !open && !authorized(&s.limits, req.headers()) {
        let mut r = err(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer …)".into(),
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        next.run(req).await
    };
    let secs = t.elapsed().as_secs_f64();
    let code = resp.status().as_u16();
    let served = resp.extensions().get::<Served>().cloned();
    if let Some(sv) = &served {
        s.metrics
            .observe((sv.model.clone(), sv.version.clone(), sv.api), code, secs);
    }
    if s.limits.access_log {
        let line = json!({
            "method": method.as_str(),
            "path": path,
            "status": code,
            "model": served.as_ref().map(|x| x.model.clone()),
            "version": served.as_ref().map(|x| x.version.clone()),
            "ms": (secs * 1e6).round() / 1e3,
        });
        eprintln!("{line}");
    }
    resp
}

fn authorized(l: &Limits, h: &HeaderMap) -> bool {
    let Some(token) = &l.token else {
        return true;
    };
    let Some(given) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(s: &Server, body: Body) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, s.limits.max_body)
        .await
        .map_err(|_| {
            err(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the limit of {} bytes", s.limits.max_body),
            )
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

fn model<'a>(s: &'a Server, name: &str) -> Result<&'a Arc<Entry>, ApiError> {
    s.registry.models.get(name).ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            format!(
                "no model `{name}` (served: {})",
                s.registry
                    .models
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

fn parse_version(v: &str) -> Result<u64, ApiError> {
    v.parse().map_err(|_| {
        err(
            StatusCode::BAD_REQUEST,
            format!("`{v}` is not a version number"),
        )
    })
}

// ------------------------------------------------------------------ TF Serving v1

async fn v1_get(
    State(s): State<Arc<Server>>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    let (s, rest) = (&*s, rest.as_str());
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [m] => Ok(v1_status(model(s, m)?, None)),
        [m, "versions", v] => Ok(v1_status(model(s, m)?, Some(parse_version(v)?))),
        [m, "metadata"] => v1_metadata(model(s, m)?, Want::Newest),
        [m, "versions", v, "metadata"] => {
            v1_metadata(model(s, m)?, Want::Version(parse_version(v)?))
        }
        _ => Err(err(
            StatusCode::NOT_FOUND,
            format!("no endpoint /v1/models/{rest}"),
        )),
    }
}

fn v1_status(e: &Entry, only: Option<u64>) -> Response {
    let list: Vec<Value> = e
        .statuses()
        .into_iter()
        .rev()
        .filter(|(v, _)| only.is_none_or(|o| o == *v))
        .map(|(v, st)| {
            json!({
                "version": v.to_string(),
                "state": st.state.name(),
                "status": {
                    "error_code": if st.error.is_some() { "UNKNOWN" } else { "OK" },
                    "error_message": st.error.unwrap_or_default(),
                },
            })
        })
        .collect();
    if let (true, Some(v)) = (list.is_empty(), only) {
        return err(
            StatusCode::NOT_FOUND,
            format!("model `{}` has no version {v}", e.name),
        )
        .into_response();
    }
    axum::Json(json!({ "model_version_status": list })).into_response()
}

fn v1_metadata(e: &Entry, want: Want) -> Result<Response, ApiError> {
    let sc = e.get(&want).map_err(|m| err(StatusCode::NOT_FOUND, m))?;
    let inputs: serde_json::Map<String, Value> = rows::model_columns(&sc)
        .into_iter()
        .map(|(c, kind)| {
            let dtype = if kind == "dense" {
                "DT_FLOAT"
            } else {
                "DT_INT64"
            };
            (
                c.clone(),
                json!({ "dtype": dtype, "tensor_shape": { "dim": [{ "size": "-1" }] }, "name": c }),
            )
        })
        .collect();
    let r = axum::Json(json!({
        "model_spec": { "name": e.name, "signature_name": "", "version": sc.version.to_string() },
        "metadata": { "signature_def": { "signature_def": { "serving_default": {
            "inputs": inputs,
            "outputs": { "score": { "dtype": "DT_FLOAT", "tensor_shape": { "dim": [{ "size": "-1" }] }, "name": "score" } },
            "method_name": "tensorflow/serving/predict",
        }}}},
    }))
    .into_response();
    Ok(with_version(r, &e.name, sc.version, "v1_metadata"))
}

async fn v1_post(
    State(s): State<Arc<Server>>,
    Path(rest): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (s, rest) = (&*s, rest.as_str());
    let (target, recommending) = match (
        rest.strip_suffix(":predict"),
        rest.strip_suffix(":recommend"),
    ) {
        (Some(t), _) => (t, false),
        (_, Some(t)) => (t, true),
        _ => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("no endpoint POST /v1/models/{rest} (use …:predict or …:recommend)"),
            ));
        }
    };
    let parts: Vec<&str> = target.split('/').collect();
    let (name, want) = match parts.as_slice() {
        [m] => (*m, Want::Newest),
        [m, "versions", v] => (*m, Want::Version(parse_version(v)?)),
        [m, "labels", l] => (*m, Want::Label((*l).to_string())),
        _ => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("no endpoint POST /v1/models/{rest}"),
            ));
        }
    };
    let e = model(s, name)?;
    let req = read_body(s, body).await?;
    let sc = e.get(&want).map_err(|m| err(StatusCode::NOT_FOUND, m))?;
    let bad = |m: String| err(StatusCode::BAD_REQUEST, m);
    if recommending {
        let mut user = [recommend::user_row(&req).map_err(bad)?];
        let given = user[0].0.len();
        let source = s.fill(&sc, &mut user, &[recommend::SEEN]).await?;
        let out = recommend::answer(&sc, &req, s.limits.max_instances, &user[0].0[given..])
            .map_err(bad)?;
        return Ok(with_features(
            with_version(
                axum::Json(out).into_response(),
                &e.name,
                sc.version,
                "v1_recommend",
            ),
            source,
        ));
    }
    let (mut rows, key) = v1_rows(&req).map_err(bad)?;
    let source = s.fill(&sc, &mut rows, &[]).await?;
    let unknown = rows::unknown_entities(&sc, &rows);
    let scores = s.score(&sc, rows).await?;
    let mut out = json!({ key: scores, "model_version": sc.version.to_string() });
    if !unknown.is_empty() {
        out["unknown_entities"] = Value::Array(unknown);
    }
    Ok(with_features(
        with_version(
            axum::Json(out).into_response(),
            &e.name,
            sc.version,
            "v1_predict",
        ),
        source,
    ))
}

/// The rows of a v1 `:predict` body (`instances`, or `inputs` as rows or columns) and the key
/// its answer goes under (`predictions` or `outputs`); the error is a 400's message.
pub fn v1_rows(req: &Value) -> Result<(Vec<ReqRow>, &'static str), String> {
    let obj = req
        .as_object()
        .ok_or("the body must be a JSON object with `instances` or `inputs`")?;
    match (obj.get("instances"), obj.get("inputs")) {
        (Some(i), None) => Ok((row_list(i, "instances")?, "predictions")),
        (None, Some(Value::Array(_))) => Ok((row_list(&obj["inputs"], "inputs")?, "outputs")),
        (None, Some(Value::Object(cols))) => Ok((columnar(cols)?, "outputs")),
        (None, Some(_)) => Err("`inputs` must be an object of columns or a list of rows".into()),
        (Some(_), Some(_)) => Err("give `instances` or `inputs`, not both".into()),
        (None, None) => Err("the body has neither `instances` nor `inputs`".into()),
    }
}

/// Row objects: `[{"user_id": 1, "item_id": 7}, …]`.
fn row_list(v: &Value, what: &str) -> Result<Vec<ReqRow>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("`{what}` must be a list of rows"))?;
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let o = r.as_object().ok_or_else(|| {
                format!("{what}[{i}]: each row must be an object of feature values")
            })?;
            let mut row = ReqRow::default();
            for (c, v) in o {
                if let Some(val) = rows::value(c, v).map_err(|m| format!("{what}[{i}]: {m}"))? {
                    row.0.push((c.clone(), val));
                }
            }
            Ok(row)
        })
        .collect()
}

/// Columns: `{"user_id": [1, 2], "item_id": [7, 8]}`, every list as long as the others.
fn columnar(cols: &serde_json::Map<String, Value>) -> Result<Vec<ReqRow>, String> {
    let mut n = None;
    for (c, v) in cols {
        let len = v
            .as_array()
            .ok_or_else(|| format!("inputs.{c}: expected a list with one value per row"))?
            .len();
        match n {
            None => n = Some((c.clone(), len)),
            Some((ref first, m)) if m != len => {
                return Err(format!(
                    "inputs.{c} has {len} values but inputs.{first} has {m}: every column needs one per row"
                ));
            }
            _ => {}
        }
    }
    let n = n.map_or(0, |x| x.1);
    let mut out = vec![ReqRow::default(); n];
    for (c, v) in cols {
        for (i, x) in v.as_array().into_iter().flatten().enumerate() {
            if let Some(val) = rows::value(c, x).map_err(|m| format!("inputs row {i}: {m}"))? {
                out[i].0.push((c.clone(), val));
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ Open Inference Protocol v2

async fn v2_server() -> Response {
    axum::Json(json!({
        "name": "tusk",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
    .into_response()
}

async fn v2_ready(State(s): State<Arc<Server>>) -> Response {
    if s.registry.ready() {
        StatusCode::OK.into_response()
    } else {
        let missing: Vec<String> = s
            .registry
            .models
            .values()
            .filter(|e| e.newest().is_none())
            .map(|e| e.name.clone())
            .collect();
        err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no version loaded yet for: {}", missing.join(", ")),
        )
        .into_response()
    }
}

async fn v2_get(
    State(s): State<Arc<Server>>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    let (s, rest) = (&*s, rest.as_str());
    let parts: Vec<&str> = rest.split('/').collect();
    let (name, want, ready) = match parts.as_slice() {
        [m] => (*m, Want::Newest, false),
        [m, "ready"] => (*m, Want::Newest, true),
        [m, "versions", v] => (*m, Want::Version(parse_version(v)?), false),
        [m, "versions", v, "ready"] => (*m, Want::Version(parse_version(v)?), true),
        _ => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("no endpoint /v2/models/{rest}"),
            ));
        }
    };
    let e = model(s, name)?;
    let sc = match e.get(&want) {
        Ok(sc) => sc,
        Err(m) if ready => return Err(err(StatusCode::SERVICE_UNAVAILABLE, m)),
        Err(m) => return Err(err(StatusCode::NOT_FOUND, m)),
    };
    if ready {
        return Ok(with_version(
            StatusCode::OK.into_response(),
            &e.name,
            sc.version,
            "v2_ready",
        ));
    }
    let versions: Vec<String> = e
        .statuses()
        .into_iter()
        .filter(|(_, st)| st.state == VState::Available)
        .map(|(v, _)| v.to_string())
        .collect();
    let inputs: Vec<Value> = rows::model_columns(&sc)
        .into_iter()
        .map(|(c, kind)| {
            json!({
                "name": c,
                "datatype": if kind == "dense" { "FP32" } else { "INT64" },
                "shape": [-1],
            })
        })
        .collect();
    let r = axum::Json(json!({
        "name": e.name,
        "versions": versions,
        "platform": "tusk",
        "inputs": inputs,
        "outputs": [{ "name": "score", "datatype": "FP32", "shape": [-1, 1] }],
    }))
    .into_response();
    Ok(with_version(r, &e.name, sc.version, "v2_metadata"))
}

async fn v2_post(
    State(s): State<Arc<Server>>,
    Path(rest): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (s, rest) = (&*s, rest.as_str());
    let parts: Vec<&str> = rest.split('/').collect();
    let (name, want) = match parts.as_slice() {
        [m, "infer"] => (*m, Want::Newest),
        [m, "versions", v, "infer"] => (*m, Want::Version(parse_version(v)?)),
        _ => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("no endpoint POST /v2/models/{rest} (use …/infer)"),
            ));
        }
    };
    let e = model(s, name)?;
    let req = read_body(s, body).await?;
    let sc = e.get(&want).map_err(|m| err(StatusCode::NOT_FOUND, m))?;
    let bad = |m: String| err(StatusCode::BAD_REQUEST, m);
    let mut rows = v2_rows(&req).map_err(bad)?;
    let source = s.fill(&sc, &mut rows, &[]).await?;
    let unknown = rows::unknown_entities(&sc, &rows);
    let scores = s.score(&sc, rows).await?;
    let mut out = json!({
        "model_name": e.name,
        "model_version": sc.version.to_string(),
        "outputs": [{
            "name": "score",
            "datatype": "FP32",
            "shape": [scores.len(), 1],
            "data": scores,
        }],
    });
    if let Some(id) = req.get("id") {
        out["id"] = id.clone();
    }
    if !unknown.is_empty() {
        out["parameters"] = json!({ "unknown_entities": unknown });
    }
    Ok(with_features(
        with_version(
            axum::Json(out).into_response(),
            &e.name,
            sc.version,
            "v2_infer",
        ),
        source,
    ))
}

/// v2 input tensors (one per feature column, first dimension = rows) as rows.
/// The rows of a v2 `infer` body: one tensor per feature column; the error is a 400's message.
pub fn v2_rows(req: &Value) -> Result<Vec<ReqRow>, String> {
    let inputs = req
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("the body needs `inputs`: a list of tensors {name, shape, datatype, data}")?;
    let mut n: Option<(String, usize)> = None;
    let mut cols = Vec::new();
    for (k, t) in inputs.iter().enumerate() {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("inputs[{k}]: missing `name`"))?;
        let at = |m: &str| format!("input `{name}`: {m}");
        let shape: Vec<usize> = t
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| at("missing `shape`"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| at("`shape` must be a list of non-negative integers"))?;
        let datatype = t
            .get("datatype")
            .and_then(Value::as_str)
            .ok_or_else(|| at("missing `datatype`"))?;
        let mut data = Vec::new();
        flatten(
            t.get("data").ok_or_else(|| at("missing `data`"))?,
            &mut data,
        );
        let rows = *shape.first().ok_or_else(|| at("`shape` is empty"))?;
        // Checked: a shape is the client's to choose (the fuzzer found the overflow), and rows
        // must be backed by data, or a huge first dimension times 0 would allocate for nothing.
        let per = shape[1..]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                at(&format!(
                    "shape {shape:?}: every row needs at least one value, and at most {} in all",
                    usize::MAX
                ))
            })?;
        let total = rows.checked_mul(per);
        if total != Some(data.len()) {
            return Err(at(&format!(
                "shape {shape:?} holds {} values but `data` has {}",
                total.map_or_else(|| "too many".to_string(), |t| t.to_string()),
                data.len()
            )));
        }
        match &n {
            None => n = Some((name.to_string(), rows)),
            Some((first, m)) if *m != rows => {
                return Err(at(&format!(
                    "{rows} rows, but input `{first}` has {m}: every input needs one entry per row"
                )));
            }
            _ => {}
        }
        let ints = matches!(
            datatype,
            "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64"
        );
        let floats = matches!(datatype, "FP16" | "FP32" | "FP64");
        let mut vals = Vec::with_capacity(rows);
        for r in 0..rows {
            let cell = &data[r * per..(r + 1) * per];
            let v = match datatype {
                _ if ints => Val::Ints(
                    cell.iter()
                        .map(|x| {
                            x.as_i64()
                                .ok_or_else(|| at(&format!("{x} is not an integer")))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ if floats => Val::Floats(
                    cell.iter()
                        .map(|x| {
                            x.as_f64()
                                .map(|f| f as f32)
                                .ok_or_else(|| at(&format!("{x} is not a number")))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "BOOL" => Val::Ints(
                    cell.iter()
                        .map(|x| {
                            x.as_bool()
                                .map(i64::from)
                                .ok_or_else(|| at(&format!("{x} is not a boolean")))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "BYTES" => {
                    let s: Vec<&str> = cell
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .ok_or_else(|| at(&format!("{x} is not a string")))
                        })
                        .collect::<Result<_, _>>()?;
                    if s.len() == 1 {
                        Val::Text(s[0].to_string())
                    } else {
                        Val::Bytes(s.iter().map(|x| x.as_bytes().to_vec()).collect())
                    }
                }
                other => {
                    return Err(at(&format!(
                        "unsupported datatype `{other}` (INT*, UINT*, FP16/32/64, BOOL, BYTES)"
                    )));
                }
            };
            vals.push(v);
        }
        cols.push((name.to_string(), vals));
    }
    let n = n.map_or(0, |x| x.1);
    let mut out = vec![ReqRow::default(); n];
    for (name, vals) in cols {
        for (row, v) in out.iter_mut().zip(vals) {
            row.0.push((name.clone(), v));
        }
    }
    Ok(out)
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        x => out.push(x.clone()),
    }
}

async fn metrics_text(State(s): State<Arc<Server>>) -> Response {
    let versions: Vec<(String, Option<u64>)> = s
        .registry
        .models
        .values()
        .map(|e| (e.name.clone(), e.newest()))
        .collect();
    let mut text = s.metrics.render(&versions);
    if let Some(b) = &s.batcher {
        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, v) in [
            (
                "tusk_batches_total",
                "Batches scored by dynamic batching.",
                &b.stats.batches,
            ),
            (
                "tusk_batched_requests_total",
                "Requests in those batches.",
                &b.stats.requests,
            ),
            (
                "tusk_batched_rows_total",
                "Rows in those batches.",
                &b.stats.rows,
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Relaxed)
            ));
        }
    }
    if let Some(f) = &s.features {
        text.push_str(&f.stats.render());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Parse `--model NAME=URL` / `--model URL` (named after its last path segment) and `--label
/// [MODEL:]NAME=VERSION` into model specs.
pub fn model_specs(models: &[String], labels: &[String]) -> Result<Vec<ModelSpec>, String> {
    let mut out: Vec<ModelSpec> = Vec::new();
    for m in models {
        let (name, url) = match m.split_once('=') {
            Some((n, u)) if !n.contains('/') && !n.contains(':') => (n.to_string(), u.to_string()),
            _ => {
                let trimmed = m.trim_end_matches('/');
                let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
                (last.to_string(), m.clone())
            }
        };
        if name.is_empty() || name.contains(['/', ':']) {
            return Err(format!(
                "--model {m}: name `{name}` cannot be used in URLs; write NAME=URL"
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(format!(
                "--model {m}: a model named `{name}` is already served"
            ));
        }
        out.push(ModelSpec {
            name,
            url,
            labels: BTreeMap::new(),
        });
    }
    for l in labels {
        let (target, rest) = match l.split_once(':') {
            Some((m, r)) => (Some(m), r),
            None => (None, l.as_str()),
        };
        let (label, v) = rest
            .split_once('=')
            .ok_or_else(|| format!("--label {l}: expected [MODEL:]NAME=VERSION"))?;
        let v: u64 = v
            .parse()
            .map_err(|_| format!("--label {l}: `{v}` is not a version number"))?;
        let models: Vec<&mut ModelSpec> = match target {
            Some(m) => {
                let found: Vec<&mut ModelSpec> = out.iter_mut().filter(|o| o.name == m).collect();
                if found.is_empty() {
                    return Err(format!("--label {l}: no model named `{m}`"));
                }
                found
            }
            None if out.len() == 1 => out.iter_mut().collect(),
            None => {
                return Err(format!(
                    "--label {l}: several models are served; write MODEL:{rest}"
                ));
            }
        };
        for m in models {
            m.labels.insert(label.to_string(), v);
        }
    }
    if out.is_empty() {
        return Err("give at least one --model NAME=URL".into());
    }
    Ok(out)
}
