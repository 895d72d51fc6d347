//! Time the clickstream generator without the CLI:
//! `cargo run --release -p tusk-datagen --example clickstream -- OUT_URL [EVENTS]`
//! (OUT_URL is replaced if it exists).

use std::time::Instant;

use tusk_datagen::{ClickstreamConfig, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: clickstream OUT_URL [EVENTS]")?;
    let events = match args.next() {
        Some(n) => n.parse()?,
        None => 10_000_000,
    };
    let cfg = ClickstreamConfig {
        events,
        overwrite: true,
        ..Default::default()
    };
    let storage = tusk_storage::Storage::new()?;
    let start = Instant::now();
    let s = generate(&storage, &out, &cfg, |_| {})?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} events, {} files, {:.1} MB in {secs:.2} s ({:.1} M events/s)",
        s.events.total(),
        s.files.len(),
        s.bytes as f64 / 1e6,
        s.events.total() as f64 / secs / 1e6
    );
    Ok(())
}
