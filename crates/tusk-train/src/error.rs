//! Errors of training, evaluation, scoring and the model store.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
    /// Reading or encoding data failed.
    #[error(transparent)]
    Data(Box<tusk_data::Error>),
    /// Record files failed.
    #[error(transparent)]
    Records(Box<tusk_records::Error>),
    /// TensorBoard events failed.
    #[error(transparent)]
    Board(Box<tusk_board::Error>),
    /// The config is wrong.
    #[error("config key `{key}`: {message}")]
    Config {
        /// Dotted key, e.g. `train.epochs`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The config file does not parse.
    #[error("{file}: {message}")]
    ConfigFile {
        /// The config file.
        file: String,
        /// Parser message (names the key and line).
        message: String,
    },
    /// A model version is missing, uncommitted or damaged.
    #[error("{url}: {message}")]
    Store {
        /// Model or file URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// Another run committed to the same model: one model URL holds one history.
    #[error("{url}: {message}")]
    Conflict {
        /// Model URL.
        url: String,
        /// Which run committed what, and what to do.
        message: String,
    },
    /// Rendezvous or a collective between ranks failed.
    #[error(transparent)]
    Collective(#[from] tusk_collective::Error),
    /// An embedding server failed, went away, or refused a request.
    #[error(transparent)]
    EmbeddingServer(#[from] tusk_ps::Error),
    /// Training diverged or could not proceed.
    #[error("training: {0}")]
    Training(String),
    /// Writing scores failed.
    #[error("{file}: {message}")]
    Output {
        /// Output URL.
        file: String,
        /// What is wrong.
        message: String,
    },
}

impl From<tusk_data::Error> for Error {
    fn from(e: tusk_data::Error) -> Self {
        Error::Data(Box::new(e))
    }
}

impl From<tusk_records::Error> for Error {
    fn from(e: tusk_records::Error) -> Self {
        Error::Records(Box::new(e))
    }
}

impl From<tusk_board::Error> for Error {
    fn from(e: tusk_board::Error) -> Self {
        Error::Board(Box::new(e))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A config error for `key`.
pub fn config(key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        message: message.into(),
    }
}
