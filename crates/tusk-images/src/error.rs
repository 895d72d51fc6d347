use tusk_records::dataset::MANIFEST;

/// Everything that can go wrong normalising images. Each variant names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed (unreadable input, unreachable NameNode, ...): always fatal, unlike a
    /// corrupt image.
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
    /// Writing the output dataset failed.
    #[error(transparent)]
    Records(#[from] tusk_records::Error),
    /// A file is not a decodable PNG or JPEG (only an error with `strict`).
    #[error("{url}: corrupt image (cannot decode it as PNG or JPEG): {reason}")]
    Corrupt {
        /// The file.
        url: String,
        /// What the decoder said.
        reason: String,
    },
    /// The input names no image files.
    #[error(
        "{url}: no images found (expected a PNG/JPEG file, a glob, or a directory holding .png, .jpg or .jpeg files)"
    )]
    NoImages {
        /// The input URL as given.
        url: String,
    },
    /// The output directory already holds a dataset.
    #[error(
        "{url}: a dataset already exists here ({MANIFEST} present); write to a new directory or delete it first"
    )]
    OutputExists {
        /// The output directory.
        url: String,
    },
    /// A [`crate::NormalizeConfig`] value is out of range.
    #[error("invalid {field} setting: {reason}")]
    InvalidConfig {
        /// The setting (`mean`, `std`, `size`, `shards`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The mapper could not read its input.
    #[error("reading mapper input near line {line}: {source}")]
    Input {
        /// 1-based line number.
        line: u64,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The mapper could not write its output.
    #[error("writing mapper output: {0}")]
    Output(#[source] std::io::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
