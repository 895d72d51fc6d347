//! The object stores every process of a cluster uses: tusk's storage schemes, resolved on
//! first use.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use tusk_storage::Storage;
use url::Url;

/// DataFusion's registry (local files, and stores registered by hand) plus every
/// `hdfs://NAMENODE`, `webhdfs://HOST:PORT`, `s3://BUCKET`, `az://CONTAINER` and
/// `abfs[s]://CONTAINER@ACCOUNT…` a plan names, opened through tusk's storage the first time it
/// is asked for (the same clients, settings and retries as the rest of tusk).
#[derive(Debug)]
pub struct TuskStores {
    storage: Storage,
    known: DefaultObjectStoreRegistry,
}

impl TuskStores {
    /// A registry over `storage`.
    pub fn new(storage: Storage) -> TuskStores {
        TuskStores {
            storage,
            known: DefaultObjectStoreRegistry::new(),
        }
    }
}

impl ObjectStoreRegistry for TuskStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        match url.scheme() {
            "hdfs" | "webhdfs" | "s3" | "s3a" | "az" | "azure" | "abfs" | "abfss" => {
                // abfs:// names its container as the URL's user: keep it.
                let base = format!(
                    "{}://{}/",
                    url.scheme(),
                    &url[url::Position::BeforeUsername..url::Position::AfterPort]
                );
                let loc = self
                    .storage
                    .open(&base)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let store = loc.object_store().0;
                self.known.register_store(url, store.clone());
                Ok(store)
            }
            _ => self.known.get_store(url),
        }
    }
}
