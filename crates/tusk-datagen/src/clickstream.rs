//! The clickstream generator; the model is described in the crate docs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::io::Write;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Zipf};
use tusk_storage::{AtomicWriter, Location, Storage};

use crate::{Date, Error, Result};

/// The CSV header of every file (REES46 column order), without the line end.
pub const HEADER: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session";

/// What [`generate`] writes. `Default` is a small but non-trivial dataset: 10 000 users, 2 000
/// items, 1 000 000 events over 7 days from 2019-10-01, seed 42.
#[derive(Debug, Clone, PartialEq)]
pub struct ClickstreamConfig {
    /// Distinct users that may appear (activity is Zipf-skewed, so a short run shows fewer).
    pub users: u32,
    /// Items in the catalogue (at most 10 000 000; about 100 bytes of memory each).
    pub items: u32,
    /// Events in total, spread evenly over the days.
    pub events: u64,
    /// Days, one `date=YYYY-MM-DD` directory each.
    pub days: u32,
    /// Random seed: the same configuration always writes the same bytes.
    pub seed: u64,
    /// The first day.
    pub start_date: Date,
    /// Files per day (`part-00000.csv`, …), each a consecutive time range of the day.
    pub files_per_day: u32,
    /// Zipf exponent of user activity (0 = uniform; 1 = the top 1% of users make 40–50% of
    /// the events).
    pub user_skew: f64,
    /// Zipf exponent of item popularity (0 = uniform).
    pub item_skew: f64,
    /// Mean number of events in a session (at least 1).
    pub session_events: f64,
    /// Delete whatever is at the output location first; otherwise a non-empty location is
    /// an error.
    pub overwrite: bool,
}

impl Default for ClickstreamConfig {
    fn default() -> Self {
        ClickstreamConfig {
            users: 10_000,
            items: 2_000,
            events: 1_000_000,
            days: 7,
            seed: 42,
            start_date: Date::from_ymd(2019, 10, 1).expect("valid date"),
            files_per_day: 1,
            user_skew: 1.0,
            item_skew: 1.0,
            session_events: 5.0,
            overwrite: false,
        }
    }
}

/// Most items a catalogue may have.
const MAX_ITEMS: u32 = 10_000_000;
/// Most files a day may be split into.
const MAX_FILES_PER_DAY: u32 = 10_000;

impl ClickstreamConfig {
    /// Check every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.users == 0 {
            return bad("users", "must be at least 1, got 0".into());
        }
        if self.items == 0 || self.items > MAX_ITEMS {
            return bad(
                "items",
                format!("must be between 1 and {MAX_ITEMS}, got {}", self.items),
            );
        }
        if self.events == 0 {
            return bad("events", "must be at least 1, got 0".into());
        }
        if self.days == 0 {
            return bad("days", "must be at least 1, got 0".into());
        }
        if self.start_date.add_days(i64::from(self.days) - 1).is_none() {
            return bad(
                "days",
                format!(
                    "{} days from {} go past 9999-12-31",
                    self.days, self.start_date
                ),
            );
        }
        if self.files_per_day == 0 || self.files_per_day > MAX_FILES_PER_DAY {
            return bad(
                "files_per_day",
                format!(
                    "must be between 1 and {MAX_FILES_PER_DAY}, got {}",
                    self.files_per_day
                ),
            );
        }
        for (field, v) in [("user_skew", self.user_skew), ("item_skew", self.item_skew)] {
            if !(0.0..=5.0).contains(&v) {
                return bad(field, format!("must be between 0 and 5, got {v}"));
            }
        }
        if !(1.0..=10_000.0).contains(&self.session_events) {
            return bad(
                "session_events",
                format!("must be between 1 and 10000, got {}", self.session_events),
            );
        }
        Ok(())
    }
}

/// The four kinds of event, in funnel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The user looked at an item.
    View,
    /// The user put the item in the cart.
    Cart,
    /// The user took the item out of the cart.
    RemoveFromCart,
    /// The user bought the item.
    Purchase,
}

impl EventType {
    /// All four, in funnel order.
    pub const ALL: [EventType; 4] = [
        EventType::View,
        EventType::Cart,
        EventType::RemoveFromCart,
        EventType::Purchase,
    ];

    /// The `event_type` value in the files: `view`, `cart`, `remove_from_cart`, `purchase`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Cart => "cart",
            EventType::RemoveFromCart => "remove_from_cart",
            EventType::Purchase => "purchase",
        }
    }
}

/// Events counted by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// `view` events.
    pub view: u64,
    /// `cart` events.
    pub cart: u64,
    /// `remove_from_cart` events.
    pub remove_from_cart: u64,
    /// `purchase` events.
    pub purchase: u64,
}

impl EventCounts {
    /// The count for one type.
    pub fn get(&self, t: EventType) -> u64 {
        match t {
            EventType::View => self.view,
            EventType::Cart => self.cart,
            EventType::RemoveFromCart => self.remove_from_cart,
            EventType::Purchase => self.purchase,
        }
    }

    /// All events.
    pub fn total(&self) -> u64 {
        self.view + self.cart + self.remove_from_cart + self.purchase
    }

    fn add(&mut self, t: EventType) {
        match t {
            EventType::View => self.view += 1,
            EventType::Cart => self.cart += 1,
            EventType::RemoveFromCart => self.remove_from_cart += 1,
            EventType::Purchase => self.purchase += 1,
        }
    }
}

/// One day of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySummary {
    /// The day (its directory is `date=YYYY-MM-DD`).
    pub date: Date,
    /// Events on that day.
    pub events: u64,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events by type; `events.total()` equals the configured count.
    pub events: EventCounts,
    /// Sessions (distinct `user_session` values).
    pub sessions: u64,
    /// Per day, in order.
    pub days: Vec<DaySummary>,
    /// The URL of every CSV file written, in order (the `_SUCCESS` marker not included).
    pub files: Vec<String>,
    /// Bytes in the CSV files.
    pub bytes: u64,
    /// The output location's URL.
    pub url: String,
}

/// Write a clickstream dataset under `out_url` (see the crate docs for the layout and the
/// model). `progress` is called now and then with the number of events written so far, and
/// once at the end with the total. Files are written atomically; `_SUCCESS` is written last.
pub fn generate(
    storage: &Storage,
    out_url: &str,
    cfg: &ClickstreamConfig,
    mut progress: impl FnMut(u64),
) -> Result<Summary> {
    cfg.validate()?;
    let out = storage.open(out_url)?;
    let existing = out.list()?;
    if !existing.is_empty() {
        if !cfg.overwrite {
            return Err(Error::OutputNotEmpty {
                url: out.url(),
                files: existing.len(),
            });
        }
        out.delete_all()?;
    }
    let world = World::build(cfg);
    let mut summary = Summary {
        events: EventCounts::default(),
        sessions: 0,
        days: Vec::with_capacity(cfg.days as usize),
        files: Vec::new(),
        bytes: 0,
        url: out.url(),
    };
    let mut done = 0u64;
    progress(0);
    let days = u64::from(cfg.days);
    for day in 0..cfg.days {
        let date = cfg
            .start_date
            .add_days(i64::from(day))
            .expect("validated date range");
        let d = u64::from(day);
        let quota = cfg.events / days + u64::from(d < cfg.events % days);
        let dir = out.join(&format!("date={date}"));
        let mut gen_day = DayGenerator::new(&world, cfg, day, quota);
        gen_day.run(&dir, date, cfg.files_per_day, &mut summary, |n| {
            progress(done + n)
        })?;
        done += quota;
        summary.days.push(DaySummary {
            date,
            events: quota,
        });
    }
    out.join("_SUCCESS").write(&b""[..])?;
    progress(done);
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------
// The world: catalogue, popularity, users' tastes.

/// Category codes in the style of REES46 (some categories get none, as there).
const CATEGORY_CODES: &[&str] = &[
    "electronics.smartphone",
    "electronics.audio.headphone",
    "electronics.video.tv",
    "electronics.clocks",
    "electronics.tablet",
    "electronics.camera.photo",
    "electronics.audio.subwoofer",
    "computers.notebook",
    "computers.desktop",
    "computers.peripherals.printer",
    "computers.peripherals.mouse",
    "computers.components.videocards",
    "computers.components.memory",
    "appliances.kitchen.refrigerators",
    "appliances.kitchen.washer",
    "appliances.kitchen.microwave",
    "appliances.kitchen.kettle",
    "appliances.kitchen.blender",
    "appliances.environment.vacuum",
    "appliances.environment.air_conditioner",
    "appliances.iron",
    "appliances.personal.hair_cutter",
    "furniture.living_room.sofa",
    "furniture.living_room.chair",
    "furniture.bedroom.bed",
    "furniture.kitchen.table",
    "furniture.bathroom.bath",
    "apparel.shoes",
    "apparel.shoes.sneakers",
    "apparel.jeans",
    "apparel.tshirt",
    "apparel.costume",
    "apparel.underwear",
    "accessories.bag",
    "accessories.wallet",
    "accessories.umbrella",
    "kids.toys",
    "kids.carriage",
    "kids.skates",
    "sport.bicycle",
    "sport.tennis",
    "sport.ski",
    "construction.tools.drill",
    "construction.tools.saw",
    "construction.components.faucet",
    "auto.accessories.player",
    "auto.accessories.videoregister",
    "country_yard.lawn_mower",
    "medicine.tools.tonometer",
    "stationery.cartrige",
];

/// Syllables for made-up brand names.
const SYLLABLES: &[&str] = &[
    "ka", "ro", "vi", "ne", "tos", "mar", "li", "sen", "dor", "bel", "zu", "fa", "gro", "pin",
    "te", "lux", "ar", "ve", "mo", "sta", "ri", "on", "qu", "el", "dan", "ko", "ser", "ta",
];

/// Relative activity per UTC hour (night is quiet, the evening busiest).
const HOURLY: [f64; 24] = [
    0.55, 0.40, 0.30, 0.25, 0.25, 0.30, 0.45, 0.70, 0.95, 1.15, 1.30, 1.40, 1.45, 1.45, 1.45, 1.50,
    1.55, 1.65, 1.80, 1.90, 1.85, 1.60, 1.20, 0.80,
];

/// Share of views drawn from the user's preferred categories (the rest: global popularity).
const TASTE_VIEW_SHARE: f32 = 0.65;
/// Width of a user's price band, in log-price.
const PRICE_BAND: f32 = 0.35;
/// Cart probability after a view: base + slope × affinity.
const CART_BASE: f32 = 0.005;
const CART_SLOPE: f32 = 0.2;
/// Chance, per event while the cart is not empty, of acting on a cart item.
const CHECKOUT: f32 = 0.30;
/// Purchase (vs. remove) probability for a cart item: base + slope × affinity.
const BUY_BASE: f32 = 0.1;
const BUY_SLOPE: f32 = 0.7;
/// Items a session's cart holds at most.
const CART_CAP: usize = 6;

/// SplitMix64's output function: a good 64-bit mix of seed and a stream number.
fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Random-stream numbers, so that no two uses of the seed share a stream.
const STREAM_WORLD: u64 = 1;
const STREAM_USERS: u64 = 2;
const STREAM_TASTE: u64 = 3;
const STREAM_DAY: u64 = 1 << 32;

/// Index into `cdf` (cumulative weights) for a uniform `u` in [0, 1).
#[inline]
fn sample_cdf(cdf: &[f64], u: f64) -> usize {
    let x = u * cdf[cdf.len() - 1];
    cdf.partition_point(|&c| c <= x).min(cdf.len() - 1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A user's latent taste.
#[derive(Debug, Clone, Copy)]
struct Taste {
    cats: [u32; 3],
    n_cats: u8,
    /// Preferred log-price offset from a category's level (negative: budget).
    price: f32,
}

impl Taste {
    #[inline]
    fn likes(&self, cat: u32) -> bool {
        self.cats[..self.n_cats as usize].contains(&cat)
    }
}

struct World {
    /// Cumulative category popularity.
    cat_cdf: Vec<f64>,
    item_cat: Vec<u32>,
    /// Log price minus the category's level.
    item_dlogp: Vec<f32>,
    /// `product_id,category_id,category_code,brand,price` per item, concatenated.
    rows: Vec<u8>,
    row_off: Vec<usize>,
    /// Cumulative popularity by rank, and the item at each rank.
    pop_cdf: Vec<f64>,
    pop_item: Vec<u32>,
    /// Per category (`cat_off[c]..cat_off[c + 1]`): its items by rank and their cumulative
    /// popularity.
    cat_items: Vec<u32>,
    cat_item_cdf: Vec<f64>,
    cat_off: Vec<usize>,
    users: u64,
    user_zipf: Zipf<f64>,
    /// Activity rank → user index: `(rank * mul + add) % users`, a bijection.
    user_mul: u64,
    user_add: u64,
    seed: u64,
}

impl World {
    fn build(cfg: &ClickstreamConfig) -> World {
        let mut rng = SmallRng::seed_from_u64(mix(cfg.seed, STREAM_WORLD));
        let n_items = cfg.items as usize;
        let n_cat = (n_items / 25).clamp(1, 2000);

        // Categories: popularity (Zipf 0.8 in random order), price level, id, code, brands.
        let mut order: Vec<usize> = (0..n_cat).collect();
        order.shuffle(&mut rng);
        let mut cat_cdf = Vec::with_capacity(n_cat);
        let mut acc = 0.0;
        for &rank in &order {
            acc += 1.0 / ((rank + 1) as f64).powf(0.8);
            cat_cdf.push(acc);
        }
        let mut codes = CATEGORY_CODES.to_vec();
        codes.shuffle(&mut rng);
        let n_brands = (n_items / 8).clamp(4, 5000);
        let brands = brand_names(&mut rng, n_brands);
        let mut cat_level = Vec::with_capacity(n_cat);
        let mut cat_text = Vec::with_capacity(n_cat); // "category_id,category_code"
        let mut cat_brands: Vec<Vec<usize>> = Vec::with_capacity(n_cat);
        for c in 0..n_cat {
            let z: f64 = StandardNormal.sample(&mut rng);
            cat_level.push((3.6 + 1.1 * z).clamp(0.3, 8.0));
            let id =
                2_053_013_552_000_000_000u64 + ((c as u64) << 34) + rng.random_range(0..1 << 30);
            let code = if c < codes.len() {
                if rng.random::<f32>() < 0.85 {
                    codes[c]
                } else {
                    ""
                }
            } else if rng.random::<f32>() < 0.5 {
                codes[rng.random_range(0..codes.len())]
            } else {
                ""
            };
            cat_text.push(format!("{id},{code}"));
            let k = rng.random_range(1..=6usize);
            cat_brands.push((0..k).map(|_| rng.random_range(0..n_brands)).collect());
        }

        // Items: category (one per category first, then by category popularity), brand,
        // price, id.
        let mut item_cat = Vec::with_capacity(n_items);
        let mut item_dlogp = Vec::with_capacity(n_items);
        let mut rows = Vec::with_capacity(n_items * 80);
        let mut row_off = Vec::with_capacity(n_items + 1);
        row_off.push(0);
        for i in 0..n_items {
            let c = if i < n_cat {
                i
            } else {
                sample_cdf(&cat_cdf, rng.random())
            };
            let z: f64 = StandardNormal.sample(&mut rng);
            let dlogp = (0.5 * z).clamp(-2.0, 2.0);
            let cents = ((cat_level[c] + dlogp).exp() * 100.0).round().max(10.0) as u64;
            let brand = if rng.random::<f32>() < 0.1 {
                ""
            } else {
                let cb = &cat_brands[c];
                brands[cb[rng.random_range(0..cb.len())]].as_str()
            };
            let product_id = 1_000_000 + 31 * i as u64 + rng.random_range(0..31);
            write!(
                rows,
                "{product_id},{},{brand},{}.{:02}",
                cat_text[c],
                cents / 100,
                cents % 100
            )
            .expect("writing to a Vec");
            row_off.push(rows.len());
            item_cat.push(c as u32);
            item_dlogp.push(dlogp as f32);
        }

        // Popularity: Zipf over a random order of the items.
        let mut pop_item: Vec<u32> = (0..n_items as u32).collect();
        pop_item.shuffle(&mut rng);
        let weight = |rank: usize| 1.0 / ((rank + 1) as f64).powf(cfg.item_skew);
        let mut pop_cdf = Vec::with_capacity(n_items);
        let mut acc = 0.0;
        for rank in 0..n_items {
            acc += weight(rank);
            pop_cdf.push(acc);
        }
        // The same popularity within each category (counting sort by category, in rank order).
        let mut cat_off = vec![0usize; n_cat + 1];
        for &c in &item_cat {
            cat_off[c as usize + 1] += 1;
        }
        for c in 0..n_cat {
            cat_off[c + 1] += cat_off[c];
        }
        let mut fill = cat_off.clone();
        let mut cat_items = vec![0u32; n_items];
        let mut cat_item_cdf = vec![0f64; n_items];
        let mut cat_acc = vec![0f64; n_cat];
        for (rank, &item) in pop_item.iter().enumerate() {
            let c = item_cat[item as usize] as usize;
            cat_acc[c] += weight(rank);
            cat_items[fill[c]] = item;
            cat_item_cdf[fill[c]] = cat_acc[c];
            fill[c] += 1;
        }

        // Users: Zipf activity by rank, ranks scattered over user indices.
        let users = u64::from(cfg.users);
        let mut user_rng = SmallRng::seed_from_u64(mix(cfg.seed, STREAM_USERS));
        let mut user_mul = user_rng.random_range(0..users).max(1);
        while gcd(user_mul, users) != 1 {
            user_mul += 1;
        }
        let user_add = user_rng.random_range(0..users);
        World {
            cat_cdf,
            item_cat,
            item_dlogp,
            rows,
            row_off,
            pop_cdf,
            pop_item,
            cat_items,
            cat_item_cdf,
            cat_off,
            users,
            user_zipf: Zipf::new(users as f64, cfg.user_skew).expect("validated Zipf parameters"),
            user_mul,
            user_add,
            seed: cfg.seed,
        }
    }

    #[inline]
    fn row(&self, item: u32) -> &[u8] {
        &self.rows[self.row_off[item as usize]..self.row_off[item as usize + 1]]
    }

    /// A user index, by activity.
    fn sample_user(&self, rng: &mut SmallRng) -> u64 {
        let rank = (self.user_zipf.sample(rng) as u64).clamp(1, self.users) - 1;
        ((u128::from(rank) * u128::from(self.user_mul) + u128::from(self.user_add))
            % u128::from(self.users)) as u64
    }

    /// The `user_id` column for a user index: large, unique, not sequential.
    fn user_id(&self, user: u64) -> u64 {
        500_000_000 + 7 * user + mix(self.seed ^ 0x5EED, user) % 7
    }

    /// A user's taste: a function of seed and user alone, so it never changes between days.
    fn taste(&self, user: u64) -> Taste {
        let mut rng = SmallRng::seed_from_u64(mix(self.seed ^ mix(STREAM_TASTE, 0), user));
        let want = rng.random_range(1..=3usize);
        let mut cats = [0u32; 3];
        let mut n = 0;
        for _ in 0..4 * want {
            let c = sample_cdf(&self.cat_cdf, rng.random()) as u32;
            if !cats[..n].contains(&c) {
                cats[n] = c;
                n += 1;
                if n == want {
                    break;
                }
            }
        }
        let z: f32 = StandardNormal.sample(&mut rng);
        Taste {
            cats,
            n_cats: n as u8,
            price: (0.45 * z).clamp(-1.5, 1.5),
        }
    }

    /// How well an item suits a user, in [0, 1]: preferred category × price fit.
    #[inline]
    fn affinity(&self, taste: &Taste, item: u32) -> f32 {
        let d = self.item_dlogp[item as usize] - taste.price;
        let price_fit = (-d * d / (2.0 * PRICE_BAND * PRICE_BAND)).exp();
        if taste.likes(self.item_cat[item as usize]) {
            0.3 + 0.7 * price_fit
        } else {
            0.05 + 0.15 * price_fit
        }
    }

    /// An item to view: from a preferred category (the better price fit of two
    /// popularity-weighted draws), or by global popularity.
    #[inline]
    fn pick_view(&self, rng: &mut SmallRng, taste: &Taste) -> u32 {
        if taste.n_cats > 0 && rng.random::<f32>() < TASTE_VIEW_SHARE {
            let c = taste.cats[rng.random_range(0..taste.n_cats as usize)] as usize;
            let (lo, hi) = (self.cat_off[c], self.cat_off[c + 1]);
            let cdf = &self.cat_item_cdf[lo..hi];
            let a = self.cat_items[lo + sample_cdf(cdf, rng.random())];
            let b = self.cat_items[lo + sample_cdf(cdf, rng.random())];
            let miss = |i: u32| (self.item_dlogp[i as usize] - taste.price).abs();
            if miss(a) <= miss(b) { a } else { b }
        } else {
            self.pop_item[sample_cdf(&self.pop_cdf, rng.random())]
        }
    }
}

/// `n` distinct made-up brand names of two or three syllables.
fn brand_names(rng: &mut SmallRng, n: usize) -> Vec<String> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let k = if out.len() < 500 { 2 } else { 3 } + usize::from(rng.random::<f32>() < 0.3);
        let name: String = (0..k)
            .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
            .collect();
        if seen.insert(name.clone()) {
            out.push(name);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One day: sessions arrive in time order and interleave through a heap, so events come out
// sorted without holding the day in memory.

const NO_ITEM: u32 = u32::MAX;
const SECONDS_PER_DAY: u32 = 86_400;

struct Session {
    remaining: u64,
    taste: Taste,
    last_view: u32,
    cart: [u32; CART_CAP],
    cart_len: u8,
    user_id: [u8; 20],
    user_id_len: u8,
    uuid: [u8; 36],
}

struct DayGenerator<'w> {
    world: &'w World,
    rng: SmallRng,
    /// Events of the day, and how many are not yet given to a session.
    quota: u64,
    unassigned: u64,
    /// Sessions not yet started.
    sessions_left: u64,
    /// Descending order statistic of the remaining session starts (see `next_arrival`).
    arrival_x: f64,
    /// Cumulative hourly activity, normalised to end at 1.
    hourly_cdf: [f64; 25],
    /// (time, session sequence number, slot): the next event of each open session.
    heap: BinaryHeap<Reverse<(u32, u64, u32)>>,
    slots: Vec<Session>,
    free: Vec<u32>,
    started: u64,
}

impl<'w> DayGenerator<'w> {
    fn new(world: &'w World, cfg: &ClickstreamConfig, day: u32, quota: u64) -> Self {
        let sessions = ((quota as f64 / cfg.session_events).round() as u64).clamp(1, quota.max(1));
        let sessions = if quota == 0 { 0 } else { sessions };
        let mut hourly_cdf = [0.0; 25];
        for h in 0..24 {
            hourly_cdf[h + 1] = hourly_cdf[h] + HOURLY[h];
        }
        let total = hourly_cdf[24];
        for v in &mut hourly_cdf {
            *v /= total;
        }
        DayGenerator {
            world,
            rng: SmallRng::seed_from_u64(mix(cfg.seed, STREAM_DAY + u64::from(day))),
            quota,
            unassigned: quota,
            sessions_left: sessions,
            arrival_x: 1.0,
            hourly_cdf,
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            started: 0,
        }
    }

    /// The start (second of the day) of the next session, in increasing order: the sorted
    /// uniforms of all sessions are drawn one at a time from the top (`x ← x · U^(1/k)` is the
    /// largest of k uniforms below x), mirrored, and shaped by the hourly curve.
    fn next_arrival(&mut self) -> Option<u32> {
        if self.sessions_left == 0 {
            return None;
        }
        let u: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]
        self.arrival_x *= u.powf(1.0 / self.sessions_left as f64);
        let p = 1.0 - self.arrival_x; // ascending in [0, 1)
        let h = (self.hourly_cdf.partition_point(|&c| c <= p).max(1) - 1).min(23);
        let within = (p - self.hourly_cdf[h]) / (self.hourly_cdf[h + 1] - self.hourly_cdf[h]);
        Some(((h as f64 + within.clamp(0.0, 1.0)) * 3600.0).min(86_399.0) as u32)
    }

    /// Open a session at `t`: its length (an exact split of the day's events over its
    /// sessions, uniformly among all splits, i.e. close to geometric), user, id.
    fn start_session(&mut self, t: u32) {
        let len = if self.sessions_left == 1 {
            self.unassigned
        } else {
            // Walk the gaps between the unassigned events; each is a session boundary with
            // probability (boundaries still needed) / (gaps left).
            let need = (self.sessions_left - 1) as f64;
            let mut gaps = self.unassigned - 1;
            let mut len = 1;
            while self.rng.random::<f64>() * gaps as f64 >= need {
                len += 1;
                gaps -= 1;
            }
            len
        };
        self.unassigned -= len;
        self.sessions_left -= 1;
        let user = self.world.sample_user(&mut self.rng);
        let mut user_id = [0u8; 20];
        let user_id_len = format_u64(self.world.user_id(user), &mut user_id);
        let session = Session {
            remaining: len,
            taste: self.world.taste(user),
            last_view: NO_ITEM,
            cart: [0; CART_CAP],
            cart_len: 0,
            user_id,
            user_id_len,
            uuid: uuid_v4(self.rng.random()),
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = session;
                s
            }
            None => {
                self.slots.push(session);
                (self.slots.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((t, self.started, slot)));
        self.started += 1;
    }

    /// The next event of a session: the funnel step and the item.
    #[inline]
    fn step(world: &World, rng: &mut SmallRng, s: &mut Session) -> (EventType, u32) {
        let viewed = std::mem::replace(&mut s.last_view, NO_ITEM);
        if viewed != NO_ITEM
            && (s.cart_len as usize) < CART_CAP
            && rng.random::<f32>() < CART_BASE + CART_SLOPE * world.affinity(&s.taste, viewed)
        {
            s.cart[s.cart_len as usize] = viewed;
            s.cart_len += 1;
            return (EventType::Cart, viewed);
        }
        if s.cart_len > 0 && rng.random::<f32>() < CHECKOUT {
            let k = rng.random_range(0..s.cart_len as usize);
            let item = s.cart[k];
            s.cart_len -= 1;
            s.cart[k] = s.cart[s.cart_len as usize];
            let buy = BUY_BASE + BUY_SLOPE * world.affinity(&s.taste, item);
            let t = if rng.random::<f32>() < buy {
                EventType::Purchase
            } else {
                EventType::RemoveFromCart
            };
            return (t, item);
        }
        let item = world.pick_view(rng, &s.taste);
        s.last_view = item;
        (EventType::View, item)
    }

    /// Generate the day into `parts` files under `dir`, adding to `summary`.
    fn run(
        &mut self,
        dir: &Location,
        date: Date,
        parts: u32,
        summary: &mut Summary,
        mut progress: impl FnMut(u64),
    ) -> Result<()> {
        let prefix = format!("{date} ");
        let quota = self.quota;
        let part_end = |p: u32| quota * u64::from(p + 1) / u64::from(parts);
        let mut part = 0u32;
        let mut end = part_end(0);
        let mut file = CsvFile::create(dir, part)?;
        let mut emitted = 0u64;
        let mut next_arrival = self.next_arrival();
        while emitted < quota {
            while emitted == end {
                file.finish(summary)?;
                part += 1;
                end = part_end(part);
                file = CsvFile::create(dir, part)?;
            }
            let arrival_first = match (next_arrival, self.heap.peek()) {
                (Some(a), Some(Reverse((t, _, _)))) => a < *t,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if arrival_first {
                let t = next_arrival.expect("checked");
                self.start_session(t);
                next_arrival = self.next_arrival();
                continue;
            }
            let Reverse((t, seq, slot)) = self.heap.pop().expect("events left means sessions open");
            let s = &mut self.slots[slot as usize];
            let (kind, item) = Self::step(self.world, &mut self.rng, s);
            summary.events.add(kind);

            let buf = &mut file.buf;
            buf.extend_from_slice(prefix.as_bytes());
            push_hms(buf, t);
            buf.extend_from_slice(b" UTC,");
            buf.extend_from_slice(kind.as_str().as_bytes());
            buf.push(b',');
            buf.extend_from_slice(self.world.row(item));
            buf.push(b',');
            buf.extend_from_slice(&s.user_id[..s.user_id_len as usize]);
            buf.push(b',');
            buf.extend_from_slice(&s.uuid);
            buf.push(b'\n');
            file.maybe_flush()?;

            s.remaining -= 1;
            if s.remaining > 0 {
                // Minutes apart, but never past the end of the day.
                let gap = 10.0 - 80.0 * (1.0 - self.rng.random::<f64>()).ln();
                let room = f64::from(SECONDS_PER_DAY - 1 - t) / 2.0;
                self.heap
                    .push(Reverse((t + gap.min(room) as u32, seq, slot)));
            } else {
                self.free.push(slot);
            }
            emitted += 1;
            if emitted.is_multiple_of(65_536) {
                progress(emitted);
            }
        }
        summary.sessions += self.started;
        // The last file with events, then any empty ones (header only) so that every day has
        // the same files.
        loop {
            file.finish(summary)?;
            part += 1;
            if part == parts {
                break;
            }
            file = CsvFile::create(dir, part)?;
        }
        Ok(())
    }
}

/// One output file: a reusable line buffer in front of an atomic writer.
struct CsvFile {
    writer: AtomicWriter,
    url: String,
    buf: Vec<u8>,
    bytes: u64,
}

const FLUSH_AT: usize = 256 << 10;

impl CsvFile {
    fn create(dir: &Location, part: u32) -> Result<CsvFile> {
        let loc = dir.join(&format!("part-{part:05}.csv"));
        let mut buf = Vec::with_capacity(FLUSH_AT + 1024);
        buf.extend_from_slice(HEADER.as_bytes());
        buf.push(b'\n');
        Ok(CsvFile {
            writer: loc.writer()?,
            url: loc.url(),
            buf,
            bytes: 0,
        })
    }

    #[inline]
    fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.writer
            .write_all(&self.buf)
            .map_err(|source| Error::Write {
                url: self.url.clone(),
                source,
            })?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self, summary: &mut Summary) -> Result<()> {
        self.flush()?;
        self.writer.finish()?;
        summary.bytes += self.bytes;
        summary.files.push(self.url);
        Ok(())
    }
}

/// Decimal digits of `v` at the start of `out`; returns how many.
fn format_u64(mut v: u64, out: &mut [u8; 20]) -> u8 {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = tmp.len() - i;
    out[..n].copy_from_slice(&tmp[i..]);
    n as u8
}

/// `HH:MM:SS` of a second of the day.
#[inline]
fn push_hms(buf: &mut Vec<u8>, t: u32) {
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    let two = |v: u32| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    let [h0, h1] = two(h);
    let [m0, m1] = two(m);
    let [s0, s1] = two(s);
    buf.extend_from_slice(&[h0, h1, b':', m0, m1, b':', s0, s1]);
}

/// Random bits formatted as a version-4 UUID (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`).
fn uuid_v4(bits: u128) -> [u8; 36] {
    let bits = (((bits & !(0xF << 76)) | (0x4 << 76)) & !(0x3 << 62)) | (0x2 << 62);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut nibble = 32;
    for (i, o) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *o = HEX[((bits >> (4 * nibble)) & 0xF) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_helpers() {
        let mut b = [0u8; 20];
        for v in [0u64, 7, 10, 12_345, u64::MAX] {
            let n = format_u64(v, &mut b) as usize;
            assert_eq!(std::str::from_utf8(&b[..n]).unwrap(), v.to_string());
        }
        let mut buf = Vec::new();
        push_hms(&mut buf, 0);
        push_hms(&mut buf, 86_399);
        push_hms(&mut buf, 3 * 3600 + 4 * 60 + 5);
        assert_eq!(buf, b"00:00:0023:59:5903:04:05");
        let u = uuid_v4(u128::MAX);
        assert_eq!(&u, b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        let u = uuid_v4(0);
        assert_eq!(&u, b"00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn sessions_split_the_day_exactly_and_arrive_in_order() {
        let cfg = ClickstreamConfig {
            items: 300,
            users: 500,
            ..Default::default()
        };
        let world = World::build(&cfg);
        for quota in [1u64, 2, 5, 17, 1000] {
            let mut g = DayGenerator::new(&world, &cfg, 0, quota);
            let mut total = 0;
            let mut last = 0;
            while let Some(t) = g.next_arrival() {
                assert!(t >= last && t < SECONDS_PER_DAY);
                last = t;
                g.start_session(t);
                let Reverse((_, _, slot)) = g.heap.pop().unwrap();
                total += g.slots[slot as usize].remaining;
            }
            assert_eq!(total, quota);
            assert_eq!(g.unassigned, 0);
        }
    }

    #[test]
    fn world_is_consistent() {
        let cfg = ClickstreamConfig {
            items: 1000,
            ..Default::default()
        };
        let w = World::build(&cfg);
        assert_eq!(w.cat_off.len(), 1000 / 25 + 1);
        assert_eq!(*w.cat_off.last().unwrap(), 1000);
        // Every category has an item; every item's row has 5 fields.
        assert!(w.cat_off.windows(2).all(|p| p[1] > p[0]));
        for i in 0..1000 {
            let row = std::str::from_utf8(w.row(i)).unwrap();
            assert_eq!(row.split(',').count(), 5, "{row}");
        }
        // User rank → index is a bijection.
        let mut seen = HashSet::new();
        for rank in 0..w.users {
            let idx = (u128::from(rank) * u128::from(w.user_mul) + u128::from(w.user_add))
                % u128::from(w.users);
            assert!(seen.insert(idx));
        }
    }
}
