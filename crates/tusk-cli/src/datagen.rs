//! `tusk datagen …`: synthetic datasets.

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, HumanCount};
use tusk_datagen::{ClickstreamConfig, Date, EventType};
use tusk_storage::Storage;

use crate::records::progress_bar;

#[derive(Debug, Subcommand)]
pub enum DatagenCommand {
    /// E-commerce behaviour logs in the REES46 layout (event_time, event_type, product_id,
    /// category_id, category_code, brand, price, user_id, user_session), one directory per day
    /// (OUT/date=YYYY-MM-DD/part-00000.csv, then OUT/_SUCCESS). Users and items are
    /// Zipf-skewed; users have latent tastes (categories, price band) that drive carts and
    /// purchases, so a model can beat a popularity baseline. The same flags always write the
    /// same bytes.
    Clickstream(ClickstreamArgs),
}

#[derive(Debug, Args)]
pub struct ClickstreamArgs {
    /// Output directory (any storage URL); it must be empty unless --overwrite.
    #[arg(long, value_name = "URL")]
    out: String,
    /// Distinct users (activity is Zipf-skewed, so small runs show fewer).
    #[arg(long, default_value_t = ClickstreamConfig::default().users)]
    users: u32,
    /// Items in the catalogue.
    #[arg(long, default_value_t = ClickstreamConfig::default().items)]
    items: u32,
    /// Events in total, spread evenly over the days.
    #[arg(long, default_value_t = ClickstreamConfig::default().events)]
    events: u64,
    /// Days, one date=YYYY-MM-DD directory each.
    #[arg(long, default_value_t = ClickstreamConfig::default().days)]
    days: u32,
    /// Random seed.
    #[arg(long, default_value_t = ClickstreamConfig::default().seed)]
    seed: u64,
    /// The first day.
    #[arg(
        long,
        value_name = "YYYY-MM-DD",
        default_value_t = ClickstreamConfig::default().start_date
    )]
    start_date: Date,
    /// Files per day, each a consecutive time range of the day.
    #[arg(long, value_name = "N", default_value_t = ClickstreamConfig::default().files_per_day)]
    files_per_day: u32,
    /// Zipf exponent of user activity (0 = uniform).
    #[arg(long, default_value_t = ClickstreamConfig::default().user_skew)]
    user_skew: f64,
    /// Zipf exponent of item popularity (0 = uniform).
    #[arg(long, default_value_t = ClickstreamConfig::default().item_skew)]
    item_skew: f64,
    /// Mean events per session.
    #[arg(long, default_value_t = ClickstreamConfig::default().session_events)]
    session_events: f64,
    /// Delete whatever is at --out first.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(cmd: DatagenCommand) -> Result<()> {
    match cmd {
        DatagenCommand::Clickstream(a) => clickstream(a),
    }
}

fn clickstream(a: ClickstreamArgs) -> Result<()> {
    let cfg = ClickstreamConfig {
        users: a.users,
        items: a.items,
        events: a.events,
        days: a.days,
        seed: a.seed,
        start_date: a.start_date,
        files_per_day: a.files_per_day,
        user_skew: a.user_skew,
        item_skew: a.item_skew,
        session_events: a.session_events,
        overwrite: a.overwrite,
    };
    let storage = Storage::new()?;
    let pb = progress_bar("generating");
    pb.set_length(cfg.events);
    let result = tusk_datagen::generate(&storage, &a.out, &cfg, |n| pb.set_position(n));
    pb.finish_and_clear();
    let s = result.map_err(|e| match e {
        // Name the flag, not the library's field.
        tusk_datagen::Error::InvalidConfig { field, reason } => {
            anyhow!("invalid --{}: {reason}", field.replace('_', "-"))
        }
        e => e.into(),
    })?;
    let by_type: Vec<String> = EventType::ALL
        .iter()
        .map(|&t| format!("{} {}", HumanCount(s.events.get(t)), t.as_str()))
        .collect();
    let (first, last) = (
        s.days.first().map(|d| d.date),
        s.days.last().map(|d| d.date),
    );
    eprintln!(
        "wrote {} events in {} sessions: {}",
        HumanCount(s.events.total()),
        HumanCount(s.sessions),
        by_type.join(", ")
    );
    if let (Some(first), Some(last)) = (first, last) {
        eprintln!(
            "{} day(s) {first} to {last}, {} file(s), {} under {}",
            s.days.len(),
            s.files.len(),
            HumanBytes(s.bytes),
            s.url
        );
    }
    Ok(())
}
