//! The clickstream generator as its users see it: files on a storage URL, their layout and
//! format, determinism, and the statistical structure a model is meant to find.

use std::collections::{HashMap, HashSet};

use tusk_datagen::{ClickstreamConfig, Error, EventType, HEADER, generate};
use tusk_storage::Storage;

/// One parsed CSV line.
#[derive(Debug, Clone)]
struct Event {
    time: String,
    kind: String,
    product: u64,
    category: u64,
    code: String,
    brand: String,
    price: String,
    user: u64,
    session: String,
}

fn small() -> ClickstreamConfig {
    ClickstreamConfig {
        users: 2_000,
        items: 500,
        events: 40_000,
        days: 3,
        seed: 7,
        ..Default::default()
    }
}

/// Every file under `url` (path relative to it → bytes), `_SUCCESS` included.
fn files(storage: &Storage, url: &str) -> Vec<(String, Vec<u8>)> {
    let dir = storage.open(url).unwrap();
    dir.list()
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.location.relative_to(&dir),
                e.location.read().unwrap().to_vec(),
            )
        })
        .collect()
}

fn parse(bytes: &[u8]) -> Vec<Event> {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HEADER));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 9, "{l}");
            Event {
                time: f[0].into(),
                kind: f[1].into(),
                product: f[2].parse().unwrap(),
                category: f[3].parse().unwrap(),
                code: f[4].into(),
                brand: f[5].into(),
                price: f[6].into(),
                user: f[7].parse().unwrap(),
                session: f[8].into(),
            }
        })
        .collect()
}

fn generate_events(cfg: &ClickstreamConfig, name: &str) -> Vec<Event> {
    let storage = Storage::new().unwrap();
    let url = format!("memory://{name}/out");
    let summary = generate(&storage, &url, cfg, |_| {}).unwrap();
    assert_eq!(summary.events.total(), cfg.events);
    files(&storage, &url)
        .iter()
        .filter(|(p, _)| p.ends_with(".csv"))
        .flat_map(|(_, b)| parse(b))
        .collect()
}

#[test]
fn same_config_same_bytes_other_seed_other_bytes() {
    let storage = Storage::new().unwrap();
    let cfg = small();
    let a = generate(&storage, "memory://det/a", &cfg, |_| {}).unwrap();
    let b = generate(&storage, "memory://det/b", &cfg, |_| {}).unwrap();
    let fa = files(&storage, "memory://det/a");
    assert_eq!(fa, files(&storage, "memory://det/b"));
    assert_eq!(a.events, b.events);
    // A fresh Storage (nothing shared) gives the same bytes too.
    let other = Storage::new().unwrap();
    generate(&other, "memory://det/a", &cfg, |_| {}).unwrap();
    assert_eq!(fa, files(&other, "memory://det/a"));

    let seeded = ClickstreamConfig { seed: 8, ..cfg };
    generate(&storage, "memory://det/c", &seeded, |_| {}).unwrap();
    let fc = files(&storage, "memory://det/c");
    assert_eq!(fa.len(), fc.len());
    assert_ne!(fa, fc);
}

#[test]
fn layout_header_rows_and_formats() {
    let storage = Storage::new().unwrap();
    let cfg = ClickstreamConfig {
        events: 10_001,
        days: 3,
        start_date: "2020-02-28".parse().unwrap(),
        ..small()
    };
    let mut calls = Vec::new();
    let summary = generate(&storage, "memory://layout/x", &cfg, |n| calls.push(n)).unwrap();
    assert_eq!(calls.last(), Some(&10_001));
    assert!(calls.windows(2).all(|w| w[0] <= w[1]));

    let all = files(&storage, "memory://layout/x");
    let names: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "_SUCCESS",
            "date=2020-02-28/part-00000.csv",
            "date=2020-02-29/part-00000.csv",
            "date=2020-03-01/part-00000.csv",
        ]
    );
    assert!(all[0].1.is_empty());
    assert_eq!(summary.files.len(), 3);
    assert_eq!(
        summary.files[0],
        "memory://layout/x/date=2020-02-28/part-00000.csv"
    );
    assert_eq!(
        summary.bytes,
        all.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    let per_day: Vec<u64> = summary.days.iter().map(|d| d.events).collect();
    assert_eq!(per_day, [3334, 3334, 3333]);

    let mut total = 0;
    let mut session_user = HashMap::new();
    let mut categories = HashMap::new();
    for ((path, bytes), day) in all[1..].iter().zip(&summary.days) {
        assert!(path.contains(&day.date.to_string()));
        let events = parse(bytes);
        assert_eq!(events.len() as u64, day.events, "{path}");
        total += events.len() as u64;
        // Sorted by time; every time is on the partition's day, in REES46's format.
        assert!(events.windows(2).all(|w| w[0].time <= w[1].time), "{path}");
        for e in &events {
            let t = e.time.as_bytes();
            assert_eq!(t.len(), 23, "{}", e.time);
            assert!(e.time.starts_with(&format!("{} ", day.date)), "{}", e.time);
            assert!(e.time.ends_with(" UTC"));
            assert_eq!((t[13], t[16]), (b':', b':'));
            assert!(e.time[11..13].parse::<u32>().unwrap() < 24);
            assert!(["view", "cart", "remove_from_cart", "purchase"].contains(&e.kind.as_str()));
            assert!(e.product >= 1_000_000);
            assert_eq!(e.category.to_string().len(), 19);
            assert!(e.code.is_empty() || e.code.split('.').all(|p| !p.is_empty()));
            assert!(
                e.code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
            );
            assert!(e.brand.chars().all(|c| c.is_ascii_lowercase()));
            let (whole, cents) = e.price.split_once('.').unwrap();
            assert!(
                whole.parse::<u64>().is_ok() && cents.len() == 2,
                "{}",
                e.price
            );
            assert!(e.user >= 500_000_000);
            let s = e.session.as_bytes();
            assert_eq!(s.len(), 36);
            assert_eq!(
                (s[8], s[13], s[14], s[18], s[23]),
                (b'-', b'-', b'4', b'-', b'-')
            );
            // A session belongs to one user; an item to one category.
            assert_eq!(
                *session_user.entry(e.session.clone()).or_insert(e.user),
                e.user
            );
            assert_eq!(
                *categories.entry(e.product).or_insert(e.category),
                e.category
            );
        }
    }
    assert_eq!(total, 10_001);
    assert_eq!(summary.sessions as usize, session_user.len());
}

#[test]
fn files_per_day_split_the_same_stream_into_time_ranges() {
    let storage = Storage::new().unwrap();
    let one = ClickstreamConfig {
        events: 9_000,
        ..small()
    };
    let three = ClickstreamConfig {
        files_per_day: 3,
        ..one.clone()
    };
    generate(&storage, "memory://parts/one", &one, |_| {}).unwrap();
    let s = generate(&storage, "memory://parts/three", &three, |_| {}).unwrap();
    assert_eq!(s.files.len(), 9);
    let a = files(&storage, "memory://parts/one");
    let b = files(&storage, "memory://parts/three");
    for (day, (path, bytes)) in a[1..].iter().enumerate() {
        let parts = &b[1 + 3 * day..4 + 3 * day];
        assert!(parts[2].0.ends_with("part-00002.csv"));
        assert_eq!(path.split('/').next(), parts[0].0.split('/').next());
        let mut joined = HEADER.as_bytes().to_vec();
        joined.push(b'\n');
        for (_, p) in parts {
            assert_eq!(parse(p).len(), 1000);
            joined.extend_from_slice(&p[HEADER.len() + 1..]);
        }
        assert_eq!(&joined, bytes);
    }

    // More files than events: every file exists, the empty ones hold only the header.
    let tiny = ClickstreamConfig {
        events: 5,
        days: 2,
        files_per_day: 4,
        ..small()
    };
    let s = generate(&storage, "memory://parts/tiny", &tiny, |_| {}).unwrap();
    assert_eq!(s.files.len(), 8);
    let rows: usize = files(&storage, "memory://parts/tiny")
        .iter()
        .filter(|(p, _)| p.ends_with(".csv"))
        .map(|(_, b)| parse(b).len())
        .sum();
    assert_eq!(rows, 5);
}

#[test]
fn funnel_proportions_are_plausible() {
    let storage = Storage::new().unwrap();
    let s = generate(&storage, "memory://funnel/x", &small(), |_| {}).unwrap();
    let share = |t: EventType| s.events.get(t) as f64 / s.events.total() as f64;
    let (view, cart, remove, purchase) = (
        share(EventType::View),
        share(EventType::Cart),
        share(EventType::RemoveFromCart),
        share(EventType::Purchase),
    );
    assert!((0.80..0.95).contains(&view), "{:?}", s.events);
    assert!((0.03..0.12).contains(&cart), "{:?}", s.events);
    assert!((0.005..0.05).contains(&remove), "{:?}", s.events);
    assert!((0.01..0.06).contains(&purchase), "{:?}", s.events);
    assert!(purchase < cart && remove < cart);
    // Sessions average about `session_events` events.
    let per_session = s.events.total() as f64 / s.sessions as f64;
    assert!((4.5..5.5).contains(&per_session), "{per_session}");
}

#[test]
fn conversions_follow_user_taste_not_just_popularity() {
    let events = generate_events(&small(), "taste");
    // Each user's preferred categories, as a model could estimate them: their three most
    // viewed categories.
    let mut views: HashMap<u64, HashMap<u64, u32>> = HashMap::new();
    for e in events.iter().filter(|e| e.kind == "view") {
        *views
            .entry(e.user)
            .or_default()
            .entry(e.category)
            .or_default() += 1;
    }
    let top: HashMap<u64, HashSet<u64>> = views
        .iter()
        .map(|(u, cats)| {
            let mut v: Vec<_> = cats.iter().collect();
            v.sort_by_key(|(c, n)| (std::cmp::Reverse(**n), **c));
            (*u, v.iter().take(3).map(|(c, _)| **c).collect())
        })
        .collect();
    // Purchases per view, inside and outside those categories (the same items appear in
    // both groups: only the user differs).
    let (mut v_in, mut v_out, mut p_in, mut p_out) = (0f64, 0f64, 0f64, 0f64);
    for e in &events {
        let liked = top.get(&e.user).is_some_and(|t| t.contains(&e.category));
        match (e.kind.as_str(), liked) {
            ("view", true) => v_in += 1.0,
            ("view", false) => v_out += 1.0,
            ("purchase", true) => p_in += 1.0,
            ("purchase", false) => p_out += 1.0,
            _ => {}
        }
    }
    let (rate_in, rate_out) = (p_in / v_in, p_out / v_out.max(1.0));
    assert!(
        rate_in > 4.0 * rate_out,
        "conversion in taste {rate_in:.4} vs outside {rate_out:.4}"
    );
    // Where a popularity model would put purchases: the global view share of each user's
    // preferred categories. Actual purchases land there far more often.
    let mut cat_views: HashMap<u64, f64> = HashMap::new();
    for e in events.iter().filter(|e| e.kind == "view") {
        *cat_views.entry(e.category).or_default() += 1.0;
    }
    let all_views: f64 = cat_views.values().sum();
    let (mut hit, mut chance, mut n) = (0.0, 0.0, 0.0);
    for e in events.iter().filter(|e| e.kind == "purchase") {
        let t = &top[&e.user];
        hit += f64::from(u8::from(t.contains(&e.category)));
        chance += t.iter().map(|c| cat_views[c]).sum::<f64>() / all_views;
        n += 1.0;
    }
    let (hit, chance) = (hit / n, chance / n);
    assert!(
        hit > 0.85 && hit > 3.0 * chance,
        "hit {hit:.3} chance {chance:.3}"
    );
}

#[test]
fn users_and_items_are_zipf_skewed() {
    let share_of_top_percent = |cfg: &ClickstreamConfig, key: fn(&Event) -> u64| {
        let events = generate_events(cfg, "zipf");
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for e in &events {
            *counts.entry(key(e)).or_default() += 1;
        }
        let mut c: Vec<u64> = counts.into_values().collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        let top = c.len().div_ceil(100);
        c[..top].iter().sum::<u64>() as f64 / events.len() as f64
    };
    let skewed = small();
    let users = share_of_top_percent(&skewed, |e| e.user);
    assert!(users > 0.25, "top 1% of users: {users:.3}");
    let items = share_of_top_percent(&skewed, |e| e.product);
    assert!(items > 0.15, "top 1% of items: {items:.3}");
    let flat = ClickstreamConfig {
        user_skew: 0.0,
        ..skewed
    };
    let users = share_of_top_percent(&flat, |e| e.user);
    assert!(users < 0.06, "top 1% of users without skew: {users:.3}");
}

#[test]
fn local_directory_output_and_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("clicks");
    let url = out.to_string_lossy().into_owned();
    let storage = Storage::new().unwrap();
    let cfg = ClickstreamConfig {
        events: 2_000,
        days: 2,
        ..small()
    };
    let s = generate(&storage, &url, &cfg, |_| {}).unwrap();
    assert!(out.join("_SUCCESS").is_file());
    let first = std::fs::read(out.join("date=2019-10-01/part-00000.csv")).unwrap();
    assert_eq!(parse(&first).len(), 1000);
    assert_eq!(s.files[1], format!("{url}/date=2019-10-02/part-00000.csv"));
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(out.join("date=2019-10-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["part-00000.csv"]);

    // A second run refuses to mix datasets, unless asked to overwrite.
    let e = generate(&storage, &url, &cfg, |_| {}).unwrap_err();
    assert!(matches!(e, Error::OutputNotEmpty { files: 3, .. }), "{e}");
    assert!(e.to_string().contains("--overwrite"), "{e}");
    let fewer = ClickstreamConfig {
        days: 1,
        overwrite: true,
        ..cfg
    };
    generate(&storage, &url, &fewer, |_| {}).unwrap();
    assert!(!out.join("date=2019-10-02").join("part-00000.csv").exists());
    assert!(out.join("_SUCCESS").is_file());
}

#[test]
fn bad_config_names_the_field() {
    let storage = Storage::new().unwrap();
    let ok = small();
    let cases: Vec<(ClickstreamConfig, &str)> = vec![
        (
            ClickstreamConfig {
                users: 0,
                ..ok.clone()
            },
            "users",
        ),
        (
            ClickstreamConfig {
                items: 0,
                ..ok.clone()
            },
            "items",
        ),
        (
            ClickstreamConfig {
                events: 0,
                ..ok.clone()
            },
            "events",
        ),
        (
            ClickstreamConfig {
                days: 0,
                ..ok.clone()
            },
            "days",
        ),
        (
            ClickstreamConfig {
                files_per_day: 0,
                ..ok.clone()
            },
            "files_per_day",
        ),
        (
            ClickstreamConfig {
                user_skew: -1.0,
                ..ok.clone()
            },
            "user_skew",
        ),
        (
            ClickstreamConfig {
                item_skew: f64::NAN,
                ..ok.clone()
            },
            "item_skew",
        ),
        (
            ClickstreamConfig {
                session_events: 0.5,
                ..ok.clone()
            },
            "session_events",
        ),
        (
            ClickstreamConfig {
                start_date: "9999-12-30".parse().unwrap(),
                ..ok.clone()
            },
            "9999-12-31",
        ),
    ];
    for (cfg, needle) in cases {
        let e = generate(&storage, "memory://bad/x", &cfg, |_| {}).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    // Nothing was written.
    assert!(files(&storage, "memory://bad/x").is_empty());

    let e = "2019-02-30".parse::<tusk_datagen::Date>().unwrap_err();
    assert!(e.to_string().contains("2019-02-30"), "{e}");
    assert!(e.to_string().contains("day 30"), "{e}");
}
