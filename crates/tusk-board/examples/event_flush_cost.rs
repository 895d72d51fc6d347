//! What TensorBoard event writing costs over a long run: `STEPS` steps of three scalars each,
//! flushed every `EVERY` steps, into `RUN_DIR` (any tusk URL, e.g. on HDFS). Prints one JSON
//! line with the time of every flush, so a benchmark can compare early and late flushes (on
//! storage without append each flush writes only what it adds, so they should not grow).
//! With `rewrite` as the fourth argument it measures the scheme tusk used before instead: the
//! same records, but every flush rewrites the whole file so far (atomically, one file).
//!
//! ```text
//! cargo run --release -p tusk-board --example event_flush_cost -- RUN_DIR [STEPS] [EVERY] [rewrite]
//! ```

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: event_flush_cost RUN_DIR [STEPS] [EVERY]")?;
    let steps: i64 = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let every: i64 = args.next().map_or(Ok(1_000), |s| s.parse())?;
    if args.next().as_deref() == Some("rewrite") {
        return rewrite(&dir, steps, every);
    }
    let storage = tusk_storage::Storage::new()?;
    let run = storage.open(&dir)?;
    let t0 = Instant::now();
    let mut w = tusk_board::EventWriter::create(&run)?;
    let create_ms = t0.elapsed().as_secs_f64() * 1e3;
    w.set_flush_interval(None);
    let mut flush_ms = Vec::new();
    for step in 1..=steps {
        log_step(&mut w, step)?;
        if step % every == 0 {
            let t = Instant::now();
            w.flush()?;
            flush_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let total_s = t0.elapsed().as_secs_f64();
    let bytes: u64 = tusk_board::event_files(&run)?
        .iter()
        .map(|f| f.head().map(|m| m.size).unwrap_or(0))
        .sum();
    report(steps, every, create_ms, total_s, (bytes, bytes), &flush_ms);
    Ok(())
}

/// The three scalars a training step logs.
fn log_step(w: &mut tusk_board::EventWriter, step: i64) -> Result<(), Box<dyn std::error::Error>> {
    let x = step as f64;
    w.add_scalars(
        step,
        [
            ("train/loss", 1.0 / x.sqrt()),
            ("train/samples_per_sec", 400_000.0 + x),
            ("train/learning_rate", 0.001),
        ],
    )?;
    Ok(())
}

/// One JSON line; `bytes` is (size of the event files, bytes written to make them).
fn report(steps: i64, every: i64, create_ms: f64, total_s: f64, bytes: (u64, u64), ms: &[f64]) {
    let list: Vec<String> = ms.iter().map(|m| format!("{m:.2}")).collect();
    println!(
        "{{\"steps\":{steps},\"every\":{every},\"create_ms\":{create_ms:.2},\"total_s\":{total_s:.3},\"bytes\":{},\"written\":{},\"flush_ms\":[{}]}}",
        bytes.0,
        bytes.1,
        list.join(",")
    );
}

/// The earlier scheme for storage without append: one file, rewritten whole at every flush.
/// The records are those an `EventWriter` writes (taken from a local one).
fn rewrite(dir: &str, steps: i64, every: i64) -> Result<(), Box<dyn std::error::Error>> {
    let storage = tusk_storage::Storage::new()?;
    let tmp = std::env::temp_dir().join(format!("event-flush-cost-{}", std::process::id()));
    let local = storage.open(&tmp.display().to_string())?;
    let mut w = tusk_board::EventWriter::create(&local)?;
    w.set_flush_interval(None);
    let target = storage.open(dir)?.join(w.location().file_name());
    let t0 = Instant::now();
    let mut flush_ms = Vec::new();
    let mut written = 0u64;
    for step in 1..=steps {
        log_step(&mut w, step)?;
        if step % every == 0 {
            w.flush()?;
            let all = w.location().read()?;
            written += all.len() as u64;
            let t = Instant::now();
            target.write(all)?;
            flush_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let bytes = target.head()?.size;
    drop(w);
    let _ = std::fs::remove_dir_all(&tmp);
    report(
        steps,
        every,
        0.0,
        t0.elapsed().as_secs_f64(),
        (bytes, written),
        &flush_ms,
    );
    Ok(())
}
