//! Synthetic data for tusk: e-commerce clickstream logs with structure a model can learn.
//!
//! [`generate`] writes behaviour logs in the column layout of the public REES46 "eCommerce
//! behavior data" dataset, one directory per day, through `tusk-storage` (any URL):
//!
//! ```text
//! OUT/date=2019-10-01/part-00000.csv
//! OUT/date=2019-10-02/part-00000.csv
//! …
//! OUT/_SUCCESS            (empty, written last: the dataset is complete)
//!
//! event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
//! 2019-10-01 00:00:04 UTC,view,1004856,2053013555631882655,electronics.smartphone,kovira,130.76,500001234,5c0f…
//! ```
//!
//! # The generative model
//!
//! - **World.** Categories have a popularity (Zipf), a price level (log-normal) and a few
//!   brands; items belong to one category, have a price around its level and a global
//!   popularity (Zipf with exponent `item_skew`, in a random order of ids).
//! - **Users.** Activity is Zipf (`user_skew`): each session's user is drawn from it. Each user
//!   has a latent taste, fixed for the whole dataset: 1–3 preferred categories (drawn by
//!   category popularity) and a price band (a preferred log-price offset from the category's
//!   level: budget or premium).
//! - **Sessions.** Per day, session starts follow a day/night curve; a session's events are
//!   10 s to a few minutes apart and share one `user_session` id; session lengths average
//!   `session_events`. A viewed item comes from the user's preferred categories (the better
//!   price fit of two popularity-weighted draws) with probability 0.65, otherwise from global
//!   popularity.
//! - **Funnel.** After a view the user may `cart` the item, later `purchase` or
//!   `remove_from_cart` it. Both the cart and the purchase probability rise with the affinity
//!   of user and item (preferred category × price fit), not with the item's popularity: a
//!   popularity ranking explains the views, only user × item structure explains conversions.
//!
//! Every file is sorted by `event_time`; with several files per day each holds a consecutive
//! time range. The output is a function of the configuration alone: the same
//! [`ClickstreamConfig`] gives byte-identical files (on the same tusk build; the random number
//! streams come from `rand`'s `SmallRng`). Memory is bounded by the catalogue and the sessions
//! open at one time, not by the number of events.

mod clickstream;
mod date;

pub use clickstream::{
    ClickstreamConfig, DaySummary, EventCounts, EventType, HEADER, Summary, generate,
};
pub use date::Date;

/// Everything that can go wrong while generating data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range; `field` is the [`ClickstreamConfig`] field
    /// (the CLI flag has the same name with `-` for `_`).
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The field, e.g. `users`.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A date that does not parse or does not exist.
    #[error("invalid date '{input}': {reason}")]
    InvalidDate {
        /// The text or date as given.
        input: String,
        /// Why it is not a date.
        reason: String,
    },
    /// The output location already holds files (and overwriting was not asked for).
    #[error(
        "{url} already holds {files} file(s); choose an empty location or overwrite it \
         (--overwrite)"
    )]
    OutputNotEmpty {
        /// The output location.
        url: String,
        /// How many files are there.
        files: usize,
    },
    /// Writing a file failed.
    #[error("{url}: write failed: {source}")]
    Write {
        /// The file being written.
        url: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
