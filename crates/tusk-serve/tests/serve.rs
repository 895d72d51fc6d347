//! `tusk-serve` against real stored models: every endpoint through `app()` and over a socket,
//! scores equal to batch scoring, bad input answered with 4xx and a JSON error, hot reload
//! under load with zero errors, torn and damaged versions never served.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tusk_serve::{Limits, Registry, Server, VersionPolicy, app, model_specs};
use tusk_storage::Storage;
use tusk_train::{Config, Quiet, Scorer, TrainOptions, train};

fn write_csv(path: &Path, rows: usize, seed: u64) {
    let mut next = tusk_testkit::splitmix(seed);
    let mut out = String::from("user_id,item_id,price,city,label\n");
    for _ in 0..rows {
        let u = next() % 60;
        let i = next() % 40;
        let y = (u % 4 == i % 4) ^ (next().is_multiple_of(10));
        let city = ["oslo", "lima", "pune"][(u % 3) as usize];
        writeln!(out, "{u},{i},{}.5,{city},{}", i % 9, u8::from(y)).unwrap();
    }
    std::fs::write(path, out).unwrap();
}

fn config(dir: &Path) -> Config {
    let text = format!(
        r#"[data]
train = "{d}/train.csv"
[features]
sparse = ["user_id", "item_id", "city"]
dense = ["price"]
label = "label"
[model]
kind = "neumf"
user = ["user_id", "city"]
item = ["item_id"]
gmf_dim = 4
mlp_dim = 4
layers = [8]
[train]
epochs = 40
batch_size = 32
learning_rate = 0.01
checkpoint_every = 5
"#,
        d = dir.display()
    );
    Config::parse("serve.toml", &text, &[]).unwrap()
}

/// Train (or continue) the model at `dir/model` for 5 more steps: one more version.
fn publish(dir: &Path) {
    let storage = Storage::new().unwrap();
    train(
        &storage,
        Some(config(dir)),
        &TrainOptions {
            model_url: dir.join("model").display().to_string(),
            resume: dir.join("model").exists(),
            stop_after_steps: Some(5),
            ..TrainOptions::default()
        },
        &mut Quiet,
    )
    .unwrap();
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("train.csv"), 600, 3);
    publish(dir.path());
    dir
}

fn server(dir: &Path, policy: VersionPolicy, limits: Limits) -> Arc<Server> {
    let model = dir.join("model").display().to_string();
    let specs = model_specs(&[format!("ctr={model}")], &["stable=1".to_string()]).unwrap();
    let registry = Registry::new(Storage::new().unwrap(), specs, policy, |l| eprintln!("{l}"));
    Arc::new(Server::new(registry, limits, None))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One request through the router: (status, JSON body or Null, x-model-version).
fn call(s: &Arc<Server>, method: &str, uri: &str, body: Option<String>) -> (u16, Value, String) {
    call_with(s, method, uri, body, None)
}

fn call_with(
    s: &Arc<Server>,
    method: &str,
    uri: &str,
    body: Option<String>,
    token: Option<&str>,
) -> (u16, Value, String) {
    rt().block_on(async {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(body.map_or(Body::empty(), Body::from)).unwrap();
        let resp = app(s.clone()).oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let version = resp
            .headers()
            .get("x-model-version")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (code, v, version)
    })
}

/// The probability batch scoring gives each row of `csv` (`tusk predict`'s code path).
fn batch_scores(dir: &Path, csv: &str) -> Vec<f32> {
    let storage = Storage::new().unwrap();
    let input = dir.join("in.csv");
    std::fs::write(&input, csv).unwrap();
    let out = dir.join("out.csv");
    let scorer = Scorer::load(&storage, &dir.join("model").display().to_string(), None).unwrap();
    tusk_train::predict::predict(
        &storage,
        &scorer,
        &input.display().to_string(),
        &out.display().to_string(),
        |_| {},
    )
    .unwrap();
    let text = std::fs::read_to_string(out).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn v1_and_v2_answer_what_batch_scoring_computes() {
    let dir = setup();
    let s = server(dir.path(), VersionPolicy::Latest, Limits::default());
    // Nothing loaded yet: not ready, and a predict is a 404 naming why.
    assert_eq!(call(&s, "GET", "/v2/health/ready", None).0, 503);
    assert_eq!(call(&s, "GET", "/v2/health/live", None).0, 200);
    let (c, v, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:predict",
        Some(json!({"instances": [{"user_id": 1}]}).to_string()),
    );
    assert_eq!(c, 404);
    assert!(
        v["error"].as_str().unwrap().contains("no version loaded"),
        "{v}"
    );
    s.registry.poll(Duration::from_millis(10));
    assert_eq!(call(&s, "GET", "/v2/health/ready", None).0, 200);

    // Status and metadata.
    let (c, v, _) = call(&s, "GET", "/v1/models/ctr", None);
    assert_eq!(c, 200);
    let st = &v["model_version_status"][0];
    assert_eq!(st["state"], "AVAILABLE");
    let version = st["version"].as_str().unwrap().to_string();
    assert_eq!(st["status"]["error_code"], "OK");
    let (c, v, h) = call(&s, "GET", "/v1/models/ctr/metadata", None);
    assert_eq!((c, h.as_str()), (200, version.as_str()));
    let sig = &v["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["price"]["dtype"], "DT_FLOAT");
    assert_eq!(sig["inputs"]["user_id"]["dtype"], "DT_INT64");
    let (c, v, _) = call(&s, "GET", "/v2/models/ctr", None);
    assert_eq!(c, 200);
    assert_eq!(v["versions"], json!([version]));
    assert_eq!(v["outputs"][0]["name"], "score");
    assert_eq!(call(&s, "GET", "/v2/models/ctr/ready", None).0, 200);
    assert_eq!(
        call(
            &s,
            "GET",
            &format!("/v2/models/ctr/versions/{version}/ready"),
            None
        )
        .0,
        200
    );
    assert_eq!(
        call(&s, "GET", "/v2/models/ctr/versions/999/ready", None).0,
        503
    );
    let (c, v, _) = call(&s, "GET", "/v2", None);
    assert_eq!((c, v["name"].as_str()), (200, Some("tusk")));

    // The same rows through every form give what batch scoring gives; a missing value (price
    // of row 3) and an unseen user (row 2) are scored, not refused.
    let csv =
        "user_id,item_id,price,city\n1,5,5.5,lima\n4,8,8.5,lima\n9999,3,3.5,oslo\n7,2,,pune\n";
    let want = batch_scores(dir.path(), csv);
    let instances = json!({"instances": [
        {"user_id": 1, "item_id": 5, "price": 5.5, "city": "lima"},
        {"user_id": 4, "item_id": 8, "price": 8.5, "city": "lima"},
        {"user_id": 9999, "item_id": 3, "price": 3.5, "city": "oslo"},
        {"user_id": 7, "item_id": 2, "city": "pune"},
    ]});
    let close = |got: &Value| {
        let got: Vec<f32> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    };
    for uri in [
        "/v1/models/ctr:predict".to_string(),
        format!("/v1/models/ctr/versions/{version}:predict"),
        "/v1/models/ctr/labels/stable:predict".to_string(),
    ] {
        let (c, v, h) = call(&s, "POST", &uri, Some(instances.to_string()));
        assert_eq!((c, h.as_str()), (200, version.as_str()), "{uri}: {v}");
        close(&v["predictions"]);
        assert_eq!(v["model_version"], version.as_str());
    }
    let columnar = json!({"inputs": {
        "user_id": [1, 4, 9999, 7], "item_id": [5, 8, 3, 2],
        "price": [5.5, 8.5, 3.5, null], "city": ["lima", "lima", "oslo", "pune"],
    }});
    let (c, v, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:predict",
        Some(columnar.to_string()),
    );
    assert_eq!(c, 200, "{v}");
    close(&v["outputs"]);
    let infer = json!({"id": "r1", "inputs": [
        {"name": "user_id", "shape": [3], "datatype": "INT64", "data": [1, 4, 9999]},
        {"name": "item_id", "shape": [3, 1], "datatype": "INT64", "data": [[5], [8], [3]]},
        {"name": "price", "shape": [3], "datatype": "FP32", "data": [5.5, 8.5, 3.5]},
        {"name": "city", "shape": [3], "datatype": "BYTES", "data": ["lima", "lima", "oslo"]},
    ]});
    let (c, v, _) = call(&s, "POST", "/v2/models/ctr/infer", Some(infer.to_string()));
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["id"], "r1");
    assert_eq!(v["outputs"][0]["shape"], json!([3, 1]));
    let got: Vec<f32> = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    for (g, w) in got.iter().zip(&want[..3]) {
        assert!((g - w).abs() < 1e-6);
    }

    // Metrics saw the requests.
    let text = rt().block_on(async {
        let resp = app(s.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    });
    assert!(text.contains(&format!(
        "tusk_requests_total{{model=\"ctr\",version=\"{version}\",code=\"200\"}} "
    )));
    assert!(text.contains("tusk_request_duration_seconds_bucket{model=\"ctr\""));
    assert!(text.contains(&format!("tusk_model_version{{model=\"ctr\"}} {version}")));
}

#[test]
fn bad_requests_get_4xx_with_a_json_error_naming_the_problem() {
    let dir = setup();
    let limits = Limits {
        max_body: 2000,
        max_instances: 3,
        token: None,
        access_log: false,
    };
    let s = server(dir.path(), VersionPolicy::Latest, limits);
    s.registry.poll(Duration::from_millis(10));
    let post = |uri: &str, body: &str| call(&s, "POST", uri, Some(body.to_string()));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/models/ctr:predict", "{not json".into(), 400, "malformed JSON"),
        ("/v1/models/ctr:predict", "[1, 2]".into(), 400, "JSON object"),
        ("/v1/models/ctr:predict", "{}".into(), 400, "neither `instances` nor `inputs`"),
        (
            "/v1/models/ctr:predict",
            json!({"instances": [{"user_id": 1, "colour": "red"}]}).to_string(),
            400,
            "unknown feature `colour`",
        ),
        (
            "/v1/models/ctr:predict",
            json!({"instances": [{"user_id": 1.5}]}).to_string(),
            400,
            "column `user_id`",
        ),
        (
            "/v1/models/ctr:predict",
            json!({"instances": [{"price": "cheap"}]}).to_string(),
            400,
            "`price`",
        ),
        (
            "/v1/models/ctr:predict",
            json!({"instances": [{"user_id": {"x": 1}}]}).to_string(),
            400,
            "feature `user_id`",
        ),
        (
            "/v1/models/ctr:predict",
            json!({"instances": [{}, {}, {}, {}]}).to_string(),
            400,
            "over the limit of 3",
        ),
        (
            "/v1/models/ctr:predict",
            json!({"inputs": {"user_id": [1, 2], "item_id": [1]}}).to_string(),
            400,
            "one per row",
        ),
        (
            "/v1/models/ctr:predict",
            format!("{{\"instances\": [{{\"city\": \"{}\"}}]}}", "x".repeat(3000)),
            413,
            "over the limit of 2000 bytes",
        ),
        (
            "/v1/models/nope:predict",
            json!({"instances": []}).to_string(),
            404,
            "no model `nope`",
        ),
        (
            "/v1/models/ctr/versions/77:predict",
            json!({"instances": []}).to_string(),
            404,
            "version 77",
        ),
        (
            "/v1/models/ctr/labels/canary:predict",
            json!({"instances": []}).to_string(),
            404,
            "no label `canary`",
        ),
        (
            "/v2/models/ctr/infer",
            json!({"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1]}]})
                .to_string(),
            400,
            "holds 2 values but `data` has 1",
        ),
        (
            "/v2/models/ctr/infer",
            json!({"inputs": [{"name": "user_id", "shape": [1], "datatype": "COMPLEX", "data": [1]}]})
                .to_string(),
            400,
            "unsupported datatype",
        ),
        (
            "/v2/models/ctr/infer",
            json!({"inputs": [
                {"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                {"name": "item_id", "shape": [1], "datatype": "INT64", "data": [1]},
            ]})
            .to_string(),
            400,
            "every input needs one entry per row",
        ),
        ("/v2/models/ctr/infer", "{}".into(), 400, "needs `inputs`"),
        // Found by the fuzzer: a shape whose product overflows, and a huge first dimension
        // with an empty second one (rows with no data behind them).
        (
            "/v2/models/ctr/infer",
            r#"{"inputs": [{"name": "user_id", "shape": [222222, 2222222222222222222], "datatype": "INT64", "data": [1, 9]}]}"#.into(),
            400,
            "holds too many values",
        ),
        (
            "/v2/models/ctr/infer",
            r#"{"inputs": [{"name": "user_id", "shape": [1, 4294967296, 4294967296], "datatype": "INT64", "data": []}]}"#.into(),
            400,
            "at most",
        ),
        (
            "/v2/models/ctr/infer",
            json!({"inputs": [{"name": "user_id", "shape": [1000000000000u64, 0], "datatype": "INT64", "data": []}]})
                .to_string(),
            400,
            "at least one value",
        ),
    ];
    for (uri, body, code, says) in cases {
        let (c, v, _) = post(uri, &body);
        let msg = v["error"].as_str().unwrap_or_default();
        assert_eq!(c, code, "{uri} {body:.80}: {v}");
        assert!(
            msg.contains(says),
            "{uri} {body:.80}: {msg:?} lacks {says:?}"
        );
    }
    let (c, v, _) = call(&s, "GET", "/v1/models/ctr/versions/x", None);
    assert_eq!(c, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not a version number")
    );
    assert_eq!(call(&s, "GET", "/nowhere", None).0, 404);
}

#[test]
fn a_token_is_required_everywhere_but_the_health_probes() {
    let dir = setup();
    let limits = Limits {
        token: Some("s3cret".into()),
        ..Limits::default()
    };
    let s = server(dir.path(), VersionPolicy::Latest, limits);
    s.registry.poll(Duration::from_millis(10));
    let body = Some(json!({"instances": [{"user_id": 1}]}).to_string());
    for token in [None, Some("wrong"), Some("s3cret-and-more")] {
        let (c, v, _) = call_with(&s, "POST", "/v1/models/ctr:predict", body.clone(), token);
        assert_eq!(c, 401, "{token:?}");
        assert!(v["error"].as_str().unwrap().contains("bearer token"));
        assert_eq!(call_with(&s, "GET", "/metrics", None, token).0, 401);
    }
    let (c, _, _) = call_with(&s, "POST", "/v1/models/ctr:predict", body, Some("s3cret"));
    assert_eq!(c, 200);
    assert_eq!(call(&s, "GET", "/v2/health/ready", None).0, 200);
    assert_eq!(call(&s, "GET", "/v2/health/live", None).0, 200);
    // No token: a non-loopback address is refused before binding.
    let open = server(dir.path(), VersionPolicy::Latest, Limits::default());
    let e = rt()
        .block_on(tusk_serve::serve(&open, "0.0.0.0:0".parse().unwrap(), None))
        .unwrap_err();
    assert!(e.to_string().contains("give a token"), "{e}");
}

/// Raw HTTP/1.1 over a socket: (status, body).
fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (code, body)
}

/// Versions published while a client sends requests over a socket: every answer is a 200 from
/// a committed version, versions never go back; a version without its manifest is not loaded
/// until the manifest appears; a damaged version is refused while the previous one answers.
#[test]
fn hot_reload_under_load_never_fails_a_request() {
    let dir = setup();
    let s = server(dir.path(), VersionPolicy::Latest, Limits::default());
    let stop_poll = tusk_serve::start_polling(&s, Duration::from_millis(30));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(s.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });
    while !s.registry.ready() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = done.clone();
        std::thread::spawn(move || {
            let body =
                json!({"instances": [{"user_id": 3, "item_id": 7, "price": 1.5}]}).to_string();
            let mut seen: Vec<u64> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let (code, text) = http(addr, "POST", "/v1/models/ctr:predict", &body);
                assert_eq!(code, 200, "{text}");
                let v: Value = serde_json::from_str(&text).unwrap();
                let version: u64 = v["model_version"].as_str().unwrap().parse().unwrap();
                if let Some(&last) = seen.last() {
                    assert!(
                        version >= last,
                        "version went back from {last} to {version}"
                    );
                }
                seen.push(version);
            }
            seen
        })
    };
    let store = dir.path().join("model");
    let storage = Storage::new().unwrap();
    let committed = |storage: &Storage| {
        tusk_train::ModelStore::open(storage, &store.display().to_string())
            .unwrap()
            .versions()
            .unwrap()
    };
    let before = committed(&storage).len();
    for _ in 0..20 {
        publish(dir.path());
        std::thread::sleep(Duration::from_millis(40));
    }
    // Each run commits its 5th step, and an epoch's end when it passes one.
    assert!(
        committed(&storage).len() >= before + 20,
        "20 versions published"
    );
    let newest = *committed(&storage).last().unwrap();
    let wait_for = |v: u64| {
        for _ in 0..500 {
            if s.registry.models["ctr"].newest() == Some(v) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("version {v} never served");
    };
    wait_for(newest);
    done.store(true, Ordering::Relaxed);
    let seen = client.join().unwrap();
    let all = committed(&storage);
    assert!(seen.len() > 20, "only {} requests", seen.len());
    assert!(
        seen.iter().all(|v| all.contains(v)),
        "an uncommitted version answered"
    );
    let distinct: std::collections::BTreeSet<u64> = seen.iter().copied().collect();
    assert!(distinct.len() > 1, "no reload seen: {distinct:?}");
    stop_poll.store(true, Ordering::Relaxed);
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// A version directory without its manifest (a copy in progress) is never looked at; a
/// committed version whose files are damaged is refused, reported in the status, retried only
/// after a backoff, and the previous version keeps answering.
#[test]
fn torn_and_damaged_versions_are_never_served() {
    let dir = setup();
    let s = server(dir.path(), VersionPolicy::Latest, Limits::default());
    s.registry.poll(Duration::from_millis(10));
    let first = s.registry.models["ctr"].newest().unwrap();
    let body = json!({"instances": [{"user_id": 3, "item_id": 7}]}).to_string();
    let (_, before, _) = call(&s, "POST", "/v1/models/ctr:predict", Some(body.clone()));

    // Torn: the files of a new version, no manifest, no link from the history.
    let versions = dir.path().join("model/versions");
    let torn = versions.join(format!("{:06}", first + 50));
    std::fs::create_dir_all(&torn).unwrap();
    for f in ["model.safetensors", "embeddings.safetensors"] {
        std::fs::copy(versions.join(format!("{first:06}")).join(f), torn.join(f)).unwrap();
    }
    s.registry.poll(Duration::from_millis(10));
    assert_eq!(s.registry.models["ctr"].newest(), Some(first));
    assert!(
        s.registry.models["ctr"]
            .statuses()
            .iter()
            .all(|(v, _)| *v != first + 50)
    );
    std::fs::remove_dir_all(&torn).unwrap();

    // Damaged: a committed version whose weights no longer match their CRC.
    publish(dir.path());
    let storage = Storage::new().unwrap();
    let newest =
        *tusk_train::ModelStore::open(&storage, &dir.path().join("model").display().to_string())
            .unwrap()
            .versions()
            .unwrap()
            .last()
            .unwrap();
    assert!(newest > first);
    let f = versions
        .join(format!("{newest:06}"))
        .join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    s.registry.poll(Duration::from_secs(3600));
    assert_eq!(
        s.registry.models["ctr"].newest(),
        Some(first),
        "the old version answers"
    );
    let (c, v, h) = call(
        &s,
        "GET",
        &format!("/v1/models/ctr/versions/{newest}"),
        None,
    );
    assert_eq!(c, 200);
    let st = &v["model_version_status"][0];
    assert_eq!(st["state"], "END", "{v}");
    assert_eq!(st["status"]["error_code"], "UNKNOWN");
    assert!(!st["status"]["error_message"].as_str().unwrap().is_empty());
    assert!(h.is_empty());
    let (c, after, h) = call(&s, "POST", "/v1/models/ctr:predict", Some(body));
    assert_eq!((c, h), (200, first.to_string()));
    assert_eq!(after["predictions"], before["predictions"]);
    // Within the backoff the damaged version is not read again (no new LOADING state).
    s.registry.poll(Duration::from_secs(3600));
    let st = s.registry.models["ctr"].statuses();
    assert!(st.iter().any(|(v, x)| *v == newest && x.error.is_some()));
}

/// The model store on HDFS (MiniDFS): versions published there while the server polls are
/// loaded and answer; a torn version is not.
#[test]
fn serves_and_reloads_from_hdfs() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("train.csv"), 600, 3);
    let storage = Storage::new().unwrap();
    let model = format!("{}/tusk-serve-test/model", dfs.hdfs_url());
    let publish_hdfs = || {
        let resume = tusk_train::ModelStore::open(&storage, &model)
            .unwrap()
            .latest()
            .unwrap()
            .is_some();
        train(
            &storage,
            Some(config(dir.path())),
            &TrainOptions {
                model_url: model.clone(),
                resume,
                stop_after_steps: Some(5),
                ..TrainOptions::default()
            },
            &mut Quiet,
        )
        .unwrap();
    };
    publish_hdfs();
    let specs = model_specs(&[format!("ctr={model}")], &[]).unwrap();
    let registry = Registry::new(Storage::new().unwrap(), specs, VersionPolicy::Latest, |l| {
        eprintln!("{l}")
    });
    let s = Arc::new(Server::new(registry, Limits::default(), None));
    s.registry.poll(Duration::from_millis(10));
    let first = s.registry.models["ctr"].newest().expect("loaded from HDFS");
    let body = json!({"instances": [{"user_id": 3, "item_id": 7, "price": 2.5}]}).to_string();
    let (c, v, h) = call(&s, "POST", "/v1/models/ctr:predict", Some(body.clone()));
    assert_eq!((c, h), (200, first.to_string()), "{v}");
    publish_hdfs();
    s.registry.poll(Duration::from_millis(10));
    let second = s.registry.models["ctr"].newest().unwrap();
    assert!(second > first);
    let (c, v, h) = call(&s, "POST", "/v1/models/ctr:predict", Some(body));
    assert_eq!((c, h), (200, second.to_string()), "{v}");
    // Files of a version without its manifest on HDFS: never looked at.
    storage
        .open(&format!(
            "{model}/versions/{:06}/model.safetensors",
            second + 10
        ))
        .unwrap()
        .write(b"partial".to_vec())
        .unwrap();
    s.registry.poll(Duration::from_millis(10));
    assert_eq!(s.registry.models["ctr"].newest(), Some(second));
}

/// Concurrent requests are scored together and each gets exactly its own rows' scores; a bad
/// request in the same batch gets its own 400 and spoils nothing.
#[test]
fn dynamic_batching_scores_concurrent_requests_together() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = setup();
    let model = dir.path().join("model").display().to_string();
    let specs = model_specs(&[format!("ctr={model}")], &[]).unwrap();
    let registry = Registry::new(
        Storage::new().unwrap(),
        specs,
        VersionPolicy::Latest,
        |_| {},
    );
    let opts = tusk_serve::batching::BatchOptions {
        max_batch: 1000,
        timeout: Duration::from_millis(200),
    };
    let s = Arc::new(Server::new(registry, Limits::default(), Some(opts)));
    s.registry.poll(Duration::from_millis(10));
    let plain = server(dir.path(), VersionPolicy::Latest, Limits::default());
    plain.registry.poll(Duration::from_millis(10));
    let body = |k: i64| {
        if k == 5 {
            return json!({"instances": [{"user_id": 1, "colour": "red"}]}).to_string();
        }
        json!({"instances": [
            {"user_id": k, "item_id": k + 1, "price": 1.5},
            {"user_id": k + 2, "item_id": 3, "city": "oslo"},
        ]})
        .to_string()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answers: Vec<(i64, u16, Value)> = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for k in 0..12i64 {
            let router = app(s.clone());
            let b = body(k);
            set.spawn(async move {
                let req = Request::post("/v1/models/ctr:predict")
                    .body(Body::from(b))
                    .unwrap();
                let resp = router.oneshot(req).await.unwrap();
                let code = resp.status().as_u16();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                (k, code, serde_json::from_slice(&bytes).unwrap())
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    for (k, code, v) in answers {
        let (want_code, want, _) = call(&plain, "POST", "/v1/models/ctr:predict", Some(body(k)));
        assert_eq!(code, want_code, "request {k}: {v}");
        if k == 5 {
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("unknown feature `colour`")
            );
        } else {
            assert_eq!(v["predictions"], want["predictions"], "request {k}");
        }
    }
    let st = &s.batcher.as_ref().unwrap().stats;
    let (batches, requests, rows) = (
        st.batches.load(Relaxed),
        st.requests.load(Relaxed),
        st.rows.load(Relaxed),
    );
    assert_eq!((requests, rows), (11, 22));
    assert!(
        batches < 11,
        "{batches} batches for 11 requests: nothing was batched"
    );
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// A model trained beside entity tables: users (city, seen items) and the item catalogue
/// (price), as `data.entities` names them.
fn setup_with_entities() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_csv(&d.join("train.csv"), 600, 5);
    let mut users = String::from("user_id,city,seen\n");
    for u in 0..60 {
        let city = ["oslo", "lima", "pune"][u % 3];
        writeln!(users, "{u},{city},{} {}", u % 40, (u + 7) % 40).unwrap();
    }
    std::fs::write(d.join("users.csv"), users).unwrap();
    let mut items = String::from("item_id,price\n");
    for i in 0..40 {
        writeln!(items, "{i},{}.5", i % 9).unwrap();
    }
    std::fs::write(d.join("items.csv"), items).unwrap();
    let sets = [
        format!("data.entities.user_id={}/users.csv", d.display()),
        format!("data.entities.item_id={}/items.csv", d.display()),
    ];
    let text = config(d).to_toml();
    let cfg = Config::parse("serve.toml", &text, &sets).unwrap();
    train(
        &Storage::new().unwrap(),
        Some(cfg),
        &TrainOptions {
            model_url: d.join("model").display().to_string(),
            stop_after_steps: Some(5),
            ..TrainOptions::default()
        },
        &mut Quiet,
    )
    .unwrap();
    dir
}

#[test]
fn recommend_ranks_the_catalogue_as_batch_scoring_does() {
    let dir = setup_with_entities();
    let s = server(dir.path(), VersionPolicy::Latest, Limits::default());
    s.registry.poll(Duration::from_millis(10));
    // Batch scoring of every (user 7, item) pair: the entity tables fill city and price.
    let mut pairs = String::from("user_id,item_id\n");
    for i in 0..40 {
        writeln!(pairs, "7,{i}").unwrap();
    }
    let scores = batch_scores(dir.path(), &pairs);
    let mut ranked: Vec<usize> = (0..40).collect();
    ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));

    let (code, v, version) = call(
        &s,
        "POST",
        "/v1/models/ctr:recommend",
        Some(json!({"user_id": 7, "k": 5}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(version, "1");
    assert_eq!(v["model_version"], "1");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    for (got, &want) in items.iter().zip(&ranked) {
        assert_eq!(got["item_id"], json!(want));
        assert_eq!(got["score"].as_f64().unwrap() as f32, scores[want]);
    }
    assert!(v.get("unknown_entities").is_none(), "{v}");

    // exclude_seen drops the user's seen items (7 and 14); candidates restrict the set.
    let (_, v, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:recommend",
        Some(json!({"user_id": 7, "k": 40, "exclude_seen": true}).to_string()),
    );
    let ids: Vec<i64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["item_id"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = ranked
        .iter()
        .map(|&i| i as i64)
        .filter(|i| *i != 7 && *i != 14)
        .collect();
    assert_eq!(ids, want);
    let (_, v, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:recommend",
        Some(json!({"user_id": 7, "k": 2, "candidates": [3, 30, 12]}).to_string()),
    );
    let mut three = [3usize, 30, 12];
    three.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let ids: Vec<i64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["item_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [three[0] as i64, three[1] as i64]);

    // A pair alone scores what the pair with its entities' values scores.
    let (_, bare, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:predict",
        Some(json!({"instances": [{"user_id": 7, "item_id": 3}]}).to_string()),
    );
    let (_, full, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:predict",
        Some(
            json!({"instances": [{"user_id": 7, "item_id": 3, "city": "lima", "price": 3.5}]})
                .to_string(),
        ),
    );
    assert_eq!(bare["predictions"], full["predictions"]);
    assert_eq!(bare["predictions"][0].as_f64().unwrap() as f32, scores[3]);
    // A value in the request wins over the table's.
    let (_, other, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:predict",
        Some(json!({"instances": [{"user_id": 7, "item_id": 3, "price": 8.5}]}).to_string()),
    );
    assert_ne!(other["predictions"], full["predictions"]);

    // An unknown user is answered (as missing values) and named.
    let (code, v, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:recommend",
        Some(json!({"user_id": 999, "k": 3}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["unknown_entities"],
        json!([{"column": "user_id", "id": "999"}])
    );
    let (code, v, _) = call(
        &s,
        "POST",
        "/v2/models/ctr/infer",
        Some(
            json!({"inputs": [
                {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [999]},
                {"name": "item_id", "shape": [1], "datatype": "INT64", "data": [3]}
            ]})
            .to_string(),
        ),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["parameters"]["unknown_entities"],
        json!([{"instance": 0, "column": "user_id", "id": "999"}])
    );

    // Bad recommend requests: 400 naming the problem.
    for (body, needle) in [
        (json!({"k": 3}), "name the user"),
        (json!({"user_id": 7, "k": 0}), "`k`"),
        (json!({"user_id": 7, "item_id": 3}), "item column"),
        (json!({"user_id": 7, "candidates": 3}), "`candidates`"),
        (json!([1, 2]), "JSON object"),
    ] {
        let (code, v, _) = call(
            &s,
            "POST",
            "/v1/models/ctr:recommend",
            Some(body.to_string()),
        );
        assert_eq!(code, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
}

#[test]
fn recommend_without_a_catalogue_needs_candidates() {
    let dir = setup();
    let s = server(dir.path(), VersionPolicy::Latest, Limits::default());
    s.registry.poll(Duration::from_millis(10));
    let (code, v, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:recommend",
        Some(json!({"user_id": 7}).to_string()),
    );
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("catalogue"), "{v}");
    let (code, v, _) = call(
        &s,
        "POST",
        "/v1/models/ctr:recommend",
        Some(json!({"user_id": 7, "candidates": [1, 2, 3], "k": 2}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
}

/// A raw HTTP/1.1 request over TLS to `addr`, trusting only `root`: (status, body).
fn https(
    addr: std::net::SocketAddr,
    root: &rustls_pki_types::CertificateDer<'static>,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    rt().block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("handshake timed out"))??;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
            .await
            .map_err(|_| std::io::Error::other("response timed out"))??;
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Ok((code, body))
    })
}

#[test]
fn serves_https_with_a_pem_certificate() {
    let dir = setup();
    let s = server(dir.path(), VersionPolicy::Latest, Limits::default());
    s.registry.poll(Duration::from_millis(10));
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = tusk_serve::Tls::from_pem_files(&cert, &key).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = runtime.spawn(tusk_serve::serve_on(
        &s.clone(),
        listener,
        Some(tls),
        async move {
            let _ = stopped.await;
        },
    ));
    let root = ck.cert.der().clone();

    let (code, _) = https(addr, &root, "GET", "/v2/health/ready", "").unwrap();
    assert_eq!(code, 200);
    let body = json!({"instances": [{"user_id": 3, "item_id": 7, "price": 4.5, "city": "lima"}]});
    let (code, text) = https(
        addr,
        &root,
        "POST",
        "/v1/models/ctr:predict",
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let want = batch_scores(dir.path(), "user_id,item_id,price,city\n3,7,4.5,lima\n");
    assert_eq!(v["predictions"][0].as_f64().unwrap() as f32, want[0]);

    // Plain HTTP to the TLS port gets no answer, and a client that does not trust the
    // certificate fails its handshake; the server keeps serving others.
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was answered"
    );
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    assert!(https(addr, stranger.cert.der(), "GET", "/v2/health/live", "").is_err());
    assert_eq!(
        https(addr, &root, "GET", "/v2/health/live", "").unwrap().0,
        200
    );

    stop.send(()).unwrap();
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), served).await })
        .expect("the server stops")
        .unwrap()
        .unwrap();

    // Bad files: errors name the flag and the file.
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let err = tusk_serve::Tls::from_pem_files(&dir.path().join("empty.pem"), &key).unwrap_err();
    assert!(
        err.contains("--tls-cert") && err.contains("empty.pem"),
        "{err}"
    );
    let err = tusk_serve::Tls::from_pem_files(&cert, &dir.path().join("missing.pem")).unwrap_err();
    assert!(
        err.contains("--tls-key") && err.contains("missing.pem"),
        "{err}"
    );
    let err = tusk_serve::Tls::from_pem_files(&cert, &cert).unwrap_err();
    assert!(err.contains("--tls-key"), "{err}");
}
