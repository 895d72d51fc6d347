//! `tusk demo`: the whole pipeline on one storage location, end to end.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use tusk_data::{Cell, Source};
use tusk_datagen::ClickstreamConfig;
use tusk_model::metrics;
use tusk_preprocess::sql::{self, ClickstreamJob, OutputSpec};
use tusk_records::dataset::Format;
use tusk_storage::Storage;
use tusk_train::Config;

/// Generate clickstream logs → SQL features → train a DLRM-style model → compare with a
/// popularity baseline → store the model → batch-score → print a summary.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where everything goes: a local directory, hdfs://namenode:port/dir or
    /// webhdfs://namenode:port/dir. A previous demo there is replaced; any other non-empty
    /// location is refused.
    #[arg(long, default_value = "tusk-demo")]
    storage: String,
    /// Events to generate.
    #[arg(long, default_value_t = 300_000)]
    events: u64,
    /// Users in the generated logs.
    #[arg(long, default_value_t = 5_000)]
    users: u32,
    /// Items in the catalogue.
    #[arg(long, default_value_t = 1_000)]
    items: u32,
    /// Training epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Random seed for everything.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const MARKER: &str = "_tusk_demo";

fn config_text(base: &str, epochs: usize, seed: u64) -> String {
    format!(
        r#"# Written by `tusk demo`: a DLRM-style model on the clickstream SQL features.
[data]
train = "{base}/features/train"
test = "{base}/features/test"
# kept with every version: a request naming a user and an item is scored with their features
entities = {{ user_id = "{base}/features/entities/user_id", item_id = "{base}/features/entities/item_id" }}

[features]
sparse = ["user_id", "item_id", "u_top_category", "i_category_id", "i_brand"]
dense = ["u_events", "u_views", "u_carts", "u_purchases", "u_active_days", "u_recency_days",
         "u_avg_price", "i_users", "i_views", "i_purchases", "i_price"]
label = "label"
weight = "weight"

[model]
kind = "dlrm"
emb_dim = 16
bottom = [32]
top = [64, 32]
interaction = "dot"

[train]
epochs = {epochs}
batch_size = 256
learning_rate = 0.002
seed = {seed}

[eval]
group = "user_id"
k = 10
monitor = "auc"
"#
    )
}

pub fn run(a: DemoArgs) -> Result<()> {
    let storage = Storage::new()?;
    let base = a.storage.trim_end_matches('/').to_string();
    let root = storage.open(&base)?;
    let listed = match root.list() {
        Ok(l) => l,
        Err(tusk_storage::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if !listed.is_empty() {
        if root.join(MARKER).exists()? {
            eprintln!("replacing the previous demo in {base}");
            root.delete_all()?;
        } else {
            bail!(
                "{base} is not empty and holds no earlier demo: choose another --storage location"
            );
        }
    }
    root.join(MARKER)
        .write("written by `tusk demo`; the next demo run here replaces this directory\n")?;
    let mut table: Vec<(String, String, f64)> = Vec::new();

    // 1. Logs.
    let t = Instant::now();
    let logs = format!("{base}/logs");
    let gen_cfg = ClickstreamConfig {
        users: a.users,
        items: a.items,
        events: a.events,
        seed: a.seed,
        ..ClickstreamConfig::default()
    };
    eprintln!("[1/6] generating {} clickstream events → {logs}", a.events);
    let g = tusk_datagen::generate(&storage, &logs, &gen_cfg, |_| {})?;
    table.push((
        "generate clickstream".into(),
        format!(
            "{} events, {} days, {} files",
            g.events.total(),
            g.days.len(),
            g.files.len()
        ),
        t.elapsed().as_secs_f64(),
    ));

    // 2. SQL features.
    let t = Instant::now();
    let features = format!("{base}/features");
    eprintln!("[2/6] SQL feature pipeline (DataFusion) → {features}/{{train,test,entities}}");
    let job = ClickstreamJob {
        input: logs.clone(),
        output: OutputSpec {
            url: features.clone(),
            format: Format::TfRecord(tusk_records::tfrecord::Compression::None),
            shards: 4,
        },
        negatives: 4,
        seed: a.seed,
        sql: sql::CLICKSTREAM_SQL.to_string(),
        sql_name: "clickstream.sql (shipped)".into(),
        partitions: 0,
        memory_limit: None,
    };
    let s = sql::clickstream(&storage, &job, |_| {})?;
    let rows: Vec<String> = s.rows.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let entities: Vec<String> = s.entities.iter().map(|(k, n)| format!("{k} {n}")).collect();
    table.push((
        "SQL features".into(),
        format!(
            "{} rows; entity tables of {}",
            rows.join(", "),
            entities.join(", ")
        ),
        t.elapsed().as_secs_f64(),
    ));

    // 3. Train.
    let t = Instant::now();
    let cfg_url = format!("{base}/config.toml");
    let text = config_text(&base, a.epochs, a.seed);
    storage.open(&cfg_url)?.write(text.clone().into_bytes())?;
    let cfg = Config::parse(&cfg_url, &text, &[])?;
    let model = format!("{base}/model");
    eprintln!(
        "[3/6] training a DLRM-style model ({} epochs) → {model}",
        a.epochs
    );
    let summary = crate::train::run_training(&storage, Some(cfg), &model, false, false)?;
    table.push((
        "train DLRM".into(),
        format!(
            "{} epochs, {:.0} samples/s, version {:06}",
            summary.history.len(),
            summary.samples_per_sec,
            summary.version
        ),
        t.elapsed().as_secs_f64(),
    ));

    // 4. Evaluate against popularity.
    let t = Instant::now();
    eprintln!("[4/6] evaluating against a popularity baseline on {features}/test");
    let scorer = tusk_train::Scorer::load(&storage, &model, None)?;
    let test = Source::open(&storage, &format!("{features}/test"))?;
    let m = scorer.evaluate(&test)?;
    let pop = popularity(&test)?;
    let get = |m: &std::collections::BTreeMap<String, f64>, k: &str| {
        m.get(k).copied().unwrap_or(f64::NAN)
    };
    table.push((
        "evaluate (test day)".into(),
        format!(
            "AUC {:.4} vs popularity {:.4}; HR@10 {:.4} vs {:.4}; NDCG@10 {:.4} vs {:.4}",
            get(&m, "auc"),
            get(&pop, "auc"),
            get(&m, "hr@10"),
            get(&pop, "hr@10"),
            get(&m, "ndcg@10"),
            get(&pop, "ndcg@10"),
        ),
        t.elapsed().as_secs_f64(),
    ));

    // 5. Report.
    let t = Instant::now();
    eprintln!("[5/6] training report (loss and metric curves)");
    let report = format!("{model}/report.html");
    let html = tusk_board::write_report(&storage.open(&format!("{model}/events"))?, &model)
        .context("writing the training report")?;
    storage.open(&report)?.write(html.into_bytes())?;
    table.push((
        "store + report".into(),
        format!("{model}/versions/{:06}, {report}", summary.version),
        t.elapsed().as_secs_f64(),
    ));

    // 6. Batch scoring.
    let t = Instant::now();
    let scores = format!("{base}/scores.csv");
    eprintln!("[6/6] batch scoring the test day → {scores}");
    let n = tusk_train::predict::predict(
        &storage,
        &scorer,
        &format!("{features}/test"),
        &scores,
        |_| {},
    )?;
    table.push((
        "batch scoring".into(),
        format!("{} rows → {scores}", n.rows),
        t.elapsed().as_secs_f64(),
    ));

    println!();
    println!("tusk demo: e-commerce recommender, end to end, in {base}");
    println!("{:<22} {:>8}  result", "step", "seconds");
    for (step, result, secs) in &table {
        println!("{step:<22} {secs:>8.1}  {result}");
    }
    println!();
    println!("config: {cfg_url}   TensorBoard: tensorboard --logdir {model}/events");
    Ok(())
}

/// The baseline: score every row by its item's number of distinct training users (`i_users`).
fn popularity(test: &Source) -> Result<std::collections::BTreeMap<String, f64>> {
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    let mut groups: std::collections::HashMap<i64, (Vec<f32>, Vec<f32>)> = Default::default();
    test.for_each_row(|row, _| {
        let pop = match row.get("i_users") {
            Some(Cell::Ints([x])) => *x as f32,
            Some(Cell::Floats([x])) => *x,
            _ => 0.0,
        };
        let y = match row.get("label") {
            Some(Cell::Floats([x])) => *x,
            Some(Cell::Ints([x])) => *x as f32,
            _ => 0.0,
        };
        let user = match row.get("user_id") {
            Some(Cell::Ints([u])) => *u,
            _ => 0,
        };
        scores.push(pop);
        labels.push(y);
        let g = groups.entry(user).or_default();
        if y == 1.0 {
            g.0.push(pop)
        } else {
            g.1.push(pop)
        }
        Ok(true)
    })?;
    let mut m = std::collections::BTreeMap::new();
    if let Ok(a) = metrics::auc(&scores, &labels) {
        m.insert("auc".to_string(), a);
    }
    let mut lists = Vec::new();
    for (pos, neg) in groups.values() {
        for p in pos {
            let mut l = vec![*p];
            l.extend_from_slice(neg);
            lists.push(l);
        }
    }
    let refs: Vec<&[f32]> = lists.iter().map(Vec::as_slice).collect();
    if !refs.is_empty() {
        m.insert("hr@10".into(), metrics::hit_rate_at_k(&refs, 10));
        m.insert("ndcg@10".into(), metrics::ndcg_at_k(&refs, 10));
    }
    Ok(m)
}
