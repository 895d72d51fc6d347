//! MovieLens (`u.data`: `user<TAB>item<TAB>rating<TAB>timestamp`) to training and evaluation
//! datasets with the standard leave-one-out protocol of the NCF paper:
//!
//! - per user, the latest rating (ties on the timestamp: the larger item id) is the **test**
//!   positive; the test set holds it followed by 100 items the user never rated, sampled
//!   uniformly (101 consecutive rows per user, positive first);
//! - with `validation`, the second-latest rating is held out the same way as a **validation**
//!   set, for choosing epochs and hyper-parameters without touching the test set;
//! - every other rating is a **training** positive, each followed by `negatives` items the user
//!   never rated (sampled uniformly, with replacement across positives). Negatives are sampled
//!   once, here, and fixed for every epoch; the rows are shuffled (seeded) before writing.
//!
//! Every row carries `user_id` (int64), `item_id` (int64) and `label` (float: 1 positive,
//! 0 negative). "Never rated" is over the whole file, so no held-out positive is ever a
//! negative anywhere, and no test or validation positive appears in training.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tusk_records::dataset::{Format, Placement, Schema, ShardedWriter};
use tusk_records::example::{self, FeatureType, FloatList, Int64List, Kind};
use tusk_storage::Storage;

use crate::{Error, Result};

/// Options of the MovieLens job.
#[derive(Debug, Clone)]
pub struct MovieLensConfig {
    /// Sampled negatives per training positive.
    pub negatives: usize,
    /// Sampled negatives per held-out positive (the protocol's 100).
    pub eval_negatives: usize,
    /// Also hold out each user's second-latest rating as a validation set.
    pub validation: bool,
    /// Seed for sampling and shuffling.
    pub seed: u64,
    /// Output format.
    pub format: Format,
    /// Shards of the training set.
    pub shards: usize,
    /// With `history = N > 0`, every row also carries `history` (int64 list): the user's N
    /// ratings just before the row's positive, oldest first (fewer at the start of a user's
    /// timeline, none for the first rating). Test rows get the N ratings before the test
    /// positive, validation rows the N before the validation positive: only the past.
    pub history: usize,
}

impl Default for MovieLensConfig {
    fn default() -> Self {
        MovieLensConfig {
            negatives: 4,
            eval_negatives: 100,
            validation: false,
            seed: 42,
            format: Format::TfRecord(tusk_records::tfrecord::Compression::None),
            shards: 4,
            history: 0,
        }
    }
}

/// What the job wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MovieLensSummary {
    /// Ratings read.
    pub ratings: u64,
    /// Distinct users.
    pub users: u64,
    /// Distinct items.
    pub items: u64,
    /// Training positives.
    pub train_positives: u64,
    /// Training rows (positives + negatives).
    pub train_rows: u64,
    /// Users in the test set (one positive each).
    pub test_users: u64,
    /// Test rows.
    pub test_rows: u64,
    /// Validation rows (0 without validation).
    pub validation_rows: u64,
}

/// user, item, label, history
type Row = (i64, i64, f32, Vec<i64>);

#[derive(Debug, Clone, Copy)]
struct Rating {
    item: i64,
    ts: i64,
}

/// Read `u.data` from any storage URL.
fn read_ratings(storage: &Storage, input: &str) -> Result<BTreeMap<i64, Vec<Rating>>> {
    let loc = storage.open(input)?;
    let url = loc.url();
    let reader = std::io::BufReader::with_capacity(1 << 20, loc.reader()?);
    let mut by_user: BTreeMap<i64, Vec<Rating>> = BTreeMap::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|source| Error::Io {
            file: url.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parse = |field: Option<&str>, name: &str| -> Result<i64> {
            let f = field.ok_or_else(|| Error::Parse {
                file: url.clone(),
                line: line_no,
                message: format!(
                    "missing {name}: expected 4 tab-separated fields user, item, rating, timestamp"
                ),
            })?;
            f.trim().parse().map_err(|_| Error::Parse {
                file: url.clone(),
                line: line_no,
                message: format!("{name} '{f}' is not an integer"),
            })
        };
        let mut fields = line.split('\t');
        let user = parse(fields.next(), "user id")?;
        let item = parse(fields.next(), "item id")?;
        let _rating = parse(fields.next(), "rating")?;
        let ts = parse(fields.next(), "timestamp")?;
        by_user.entry(user).or_default().push(Rating { item, ts });
    }
    if by_user.is_empty() {
        return Err(Error::Input {
            input: url,
            message: "no ratings (expected lines of user<TAB>item<TAB>rating<TAB>timestamp)".into(),
        });
    }
    Ok(by_user)
}

fn row(user: i64, item: i64, label: f32, history: Option<&[i64]>) -> example::Example {
    let mut ex = example::from_features([
        (
            "user_id".to_string(),
            Kind::Int64List(Int64List { value: vec![user] }),
        ),
        (
            "item_id".to_string(),
            Kind::Int64List(Int64List { value: vec![item] }),
        ),
        (
            "label".to_string(),
            Kind::FloatList(FloatList { value: vec![label] }),
        ),
    ]);
    if let (Some(h), Some(f)) = (history, ex.features.as_mut()) {
        f.feature.insert(
            "history".to_string(),
            example::Feature {
                kind: Some(Kind::Int64List(Int64List { value: h.to_vec() })),
            },
        );
    }
    ex
}

/// `entities/user_id` (per user: `user_id`, `seen` — the items of their training positives —
/// and with `history` the N ratings before the test positive) and `entities/item_id` (every
/// item rated: the catalogue), for `data.entities`.
fn write_entities(
    dir: &tusk_storage::Location,
    cfg: &MovieLensConfig,
    users: &[(i64, Vec<i64>, Vec<i64>)],
    items: &[i64],
) -> Result<()> {
    let ints = |v: &[i64]| Kind::Int64List(Int64List { value: v.to_vec() });
    let col = |name: &str, list: bool| tusk_records::dataset::Column {
        name: name.into(),
        dtype: FeatureType::Int64,
        list,
        nullable: list,
        utf8: false,
        mixed: false,
    };
    let mut columns = vec![col("seen", true), col("user_id", false)];
    if cfg.history > 0 {
        columns.insert(0, col("history", true));
    }
    let mut w = ShardedWriter::create(
        &dir.join("user_id"),
        cfg.format,
        1,
        Schema { columns },
        Placement::RoundRobin,
    )?;
    for (user, history, seen) in users {
        let mut feats = vec![
            ("user_id".to_string(), ints(&[*user])),
            ("seen".to_string(), ints(seen)),
        ];
        if cfg.history > 0 {
            feats.push(("history".to_string(), ints(history)));
        }
        w.write_example(&example::from_features(feats))?;
    }
    w.finish()?;
    let mut w = ShardedWriter::create(
        &dir.join("item_id"),
        cfg.format,
        1,
        Schema {
            columns: vec![col("item_id", false)],
        },
        Placement::RoundRobin,
    )?;
    for item in items {
        w.write_example(&example::from_features([(
            "item_id".to_string(),
            ints(&[*item]),
        )]))?;
    }
    w.finish()?;
    Ok(())
}

fn schema(history: bool) -> Schema {
    let col = |name: &str, dtype| tusk_records::dataset::Column {
        name: name.into(),
        dtype,
        list: false,
        nullable: false,
        utf8: false,
        mixed: false,
    };
    let mut columns = vec![
        col("item_id", FeatureType::Int64),
        col("label", FeatureType::Float),
        col("user_id", FeatureType::Int64),
    ];
    if history {
        columns.insert(
            0,
            tusk_records::dataset::Column {
                list: true,
                nullable: true,
                ..col("history", FeatureType::Int64)
            },
        );
    }
    Schema { columns }
}

/// Run the job: `output/train`, `output/test` and (with validation) `output/validation`,
/// each a sharded dataset with a manifest, and the entity tables `output/entities/user_id` and
/// `output/entities/item_id` (see `write_entities`).
pub fn preprocess(
    storage: &Storage,
    input: &str,
    output: &str,
    cfg: &MovieLensConfig,
) -> Result<MovieLensSummary> {
    let by_user = read_ratings(storage, input)?;
    let mut items: Vec<i64> = by_user
        .values()
        .flat_map(|r| r.iter().map(|x| x.item))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    items.sort_unstable();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut summary = MovieLensSummary {
        users: by_user.len() as u64,
        items: items.len() as u64,
        ..Default::default()
    };
    let mut train: Vec<Row> = Vec::new();
    let mut test: Vec<Row> = Vec::new();
    let mut validation: Vec<Row> = Vec::new();
    // Per user: the history a model may use for them after training (the N ratings before the
    // test positive, as the test rows carry) and the items of their training positives.
    let mut users: Vec<(i64, Vec<i64>, Vec<i64>)> = Vec::new();
    for (&user, ratings) in &by_user {
        summary.ratings += ratings.len() as u64;
        let rated: HashSet<i64> = ratings.iter().map(|r| r.item).collect();
        let unrated = items.len() - rated.len();
        if unrated == 0 {
            return Err(Error::Input {
                input: input.into(),
                message: format!("user {user} rated every item: no negatives can be sampled"),
            });
        }
        let sample_unrated = |rng: &mut StdRng| loop {
            let it = items[rng.random_range(0..items.len())];
            if !rated.contains(&it) {
                break it;
            }
        };
        // Latest first; ties on the timestamp go to the larger item id.
        let mut order: Vec<Rating> = ratings.clone();
        order.sort_by(|a, b| b.ts.cmp(&a.ts).then(b.item.cmp(&a.item)));
        // The N ratings before latest-first position j, oldest first.
        let past = |j: usize| -> Vec<i64> {
            let end = (j + 1 + cfg.history).min(order.len());
            order[(j + 1).min(end)..end]
                .iter()
                .rev()
                .map(|r| r.item)
                .collect()
        };
        let hold = |set: &mut Vec<Row>, j: usize, rng: &mut StdRng| {
            let h = past(j);
            set.push((user, order[j].item, 1.0, h.clone()));
            let want = cfg.eval_negatives.min(unrated);
            let mut seen = HashSet::with_capacity(want);
            while seen.len() < want {
                let it = sample_unrated(rng);
                if seen.insert(it) {
                    set.push((user, it, 0.0, h.clone()));
                }
            }
        };
        hold(&mut test, 0, &mut rng);
        summary.test_users += 1;
        // A validation positive only where it leaves the user a training rating.
        let skip = if cfg.validation && order.len() > 2 {
            hold(&mut validation, 1, &mut rng);
            2
        } else {
            1
        };
        let mut seen: Vec<i64> = order.iter().skip(skip).map(|r| r.item).collect();
        seen.sort_unstable();
        users.push((user, past(0), seen));
        for (j, r) in order.iter().enumerate().skip(skip) {
            let h = past(j);
            train.push((user, r.item, 1.0, h.clone()));
            summary.train_positives += 1;
            for _ in 0..cfg.negatives {
                train.push((user, sample_unrated(&mut rng), 0.0, h.clone()));
            }
        }
    }
    train.shuffle(&mut rng);
    let out = storage.open(output)?;
    let write = |name: &str, rows: &[Row], shards: usize, shuffled: bool| -> Result<u64> {
        let placement = if shuffled {
            Placement::RoundRobin
        } else {
            // Keep each user's 101 evaluation rows together and in order.
            Placement::Contiguous(rows.len() as u64)
        };
        let mut w = ShardedWriter::create(
            &out.join(name),
            cfg.format,
            shards,
            schema(cfg.history > 0),
            placement,
        )?;
        for (u, i, l, h) in rows {
            w.write_example(&row(*u, *i, *l, (cfg.history > 0).then_some(h.as_slice())))?;
        }
        Ok(w.finish()?.records)
    };
    summary.train_rows = write("train", &train, cfg.shards, true)?;
    summary.test_rows = write("test", &test, 1, false)?;
    if cfg.validation {
        summary.validation_rows = write("validation", &validation, 1, false)?;
    }
    write_entities(&out.join("entities"), cfg, &users, &items)?;
    Ok(summary)
}
