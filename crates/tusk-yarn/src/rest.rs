//! The ResourceManager's REST API (Hadoop 3): the calls a submitting client needs.
//!
//! Plain HTTP with `user.name` (simple authentication, the default of an unsecured cluster);
//! Kerberos (SPNEGO) when the ResourceManager asks for it, with one negotiation for a whole
//! job (see `web.rs`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Result;
use crate::web::Web;

/// A ResourceManager's REST endpoint.
pub struct ResourceManager {
    web: Web,
}

/// What `new-application` hands out: an id and the largest container the cluster allows.
#[derive(Debug, Clone)]
pub struct NewApp {
    /// `application_<cluster>_<n>`.
    pub id: String,
    /// Largest memory per container, MB.
    pub max_memory_mb: u64,
    /// Largest vcores per container.
    pub max_vcores: u64,
    /// Every resource type the cluster declares, with its largest allocation (memory-mb,
    /// vcores, yarn.io/gpu, …).
    pub max_resources: BTreeMap<String, u64>,
}

/// An application's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppReport {
    /// The id.
    pub id: String,
    /// NEW, NEW_SAVING, SUBMITTED, ACCEPTED, RUNNING, FINISHED, FAILED, KILLED.
    pub state: String,
    /// UNDEFINED, SUCCEEDED, FAILED, KILLED.
    pub final_status: String,
    /// YARN's diagnostics (why it waits, why it failed).
    pub diagnostics: String,
    /// The queue it runs in.
    pub queue: String,
}

impl AppReport {
    /// Whether YARN is done with it.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "FINISHED" | "FAILED" | "KILLED")
    }

    /// Whether it ended well.
    pub fn succeeded(&self) -> bool {
        self.state == "FINISHED" && self.final_status == "SUCCEEDED"
    }
}

impl ResourceManager {
    /// `url`: the ResourceManager's web address, e.g. `http://rm:8088`. `user`: the
    /// `user.name` the application runs as.
    pub fn new(url: &str, user: &str) -> Result<ResourceManager> {
        let web = Web::new(
            url,
            crate::web::RESOURCE_MANAGER,
            Some(user),
            "the ResourceManager's web address, http://HOST:PORT (e.g. http://rm:8088)",
        )
        .map_err(|e| match e {
            crate::Error::Usage(m) => crate::Error::Usage(format!("--yarn {m}")),
            other => other,
        })?;
        Ok(ResourceManager { web })
    }

    /// How many Kerberos (SPNEGO) tokens this client has sent: 0 on an unsecured cluster, 1
    /// for any number of calls to a secured one while its `hadoop.auth` cookie is valid.
    pub fn negotiations(&self) -> usize {
        self.web.negotiations()
    }

    /// The web address given.
    pub fn url(&self) -> &str {
        self.web.url()
    }

    /// The ResourceManager's host (what `_HOST` in its principal stands for).
    pub fn host(&self) -> &str {
        self.web.host()
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        self.web.call(method, path, body)
    }

    fn protocol(&self, path: &str, what: &str, v: &Value) -> crate::Error {
        self.web.protocol(path, what, v)
    }

    /// One of the ResourceManager's own settings, from its `/conf` servlet (`None` when it
    /// has no such key).
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        let path = format!("/conf?name={key}&format=json");
        match self.call(reqwest::Method::GET, &path, None) {
            Ok(v) => Ok(v["property"]["value"].as_str().map(str::to_string)),
            Err(crate::Error::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The cluster's Hadoop version (`/ws/v1/cluster/info`).
    pub fn version(&self) -> Result<String> {
        let path = "/ws/v1/cluster/info";
        let v = self.call(reqwest::Method::GET, path, None)?;
        v["clusterInfo"]["resourceManagerVersion"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.protocol(path, "clusterInfo.resourceManagerVersion", &v))
    }

    /// A new application id and the cluster's container limits.
    pub fn new_application(&self) -> Result<NewApp> {
        let path = "/ws/v1/cluster/apps/new-application";
        let v = self.call(reqwest::Method::POST, path, None)?;
        let id = v["application-id"]
            .as_str()
            .ok_or_else(|| self.protocol(path, "application-id", &v))?
            .to_string();
        let cap = &v["maximum-resource-capability"];
        let num = |x: &Value| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        };
        let mut max_resources = BTreeMap::new();
        if let Some(list) = cap["resourceInformations"]["resourceInformation"].as_array() {
            for r in list {
                if let (Some(n), Some(val)) = (r["name"].as_str(), num(&r["value"])) {
                    max_resources.insert(n.to_string(), val);
                }
            }
        }
        Ok(NewApp {
            id,
            max_memory_mb: num(&cap["memory"])
                .ok_or_else(|| self.protocol(path, "maximum-resource-capability.memory", &v))?,
            max_vcores: num(&cap["vCores"]).unwrap_or(u64::MAX),
            max_resources,
        })
    }

    /// Submit an application (the body of `POST /ws/v1/cluster/apps`).
    pub fn submit(&self, spec: &Value) -> Result<()> {
        self.call(reqwest::Method::POST, "/ws/v1/cluster/apps", Some(spec))?;
        Ok(())
    }

    /// An application's report.
    pub fn report(&self, id: &str) -> Result<AppReport> {
        let path = format!("/ws/v1/cluster/apps/{id}");
        let v = self.call(reqwest::Method::GET, &path, None)?;
        let a = &v["app"];
        let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
        if a["state"].as_str().is_none() {
            return Err(self.protocol(&path, "app.state", &v));
        }
        Ok(AppReport {
            id: s("id"),
            state: s("state"),
            final_status: s("finalStatus"),
            diagnostics: s("diagnostics"),
            queue: s("queue"),
        })
    }

    /// Ask YARN to kill an application (its containers are stopped by the NodeManagers).
    pub fn kill(&self, id: &str) -> Result<()> {
        let path = format!("/ws/v1/cluster/apps/{id}/state");
        self.call(
            reqwest::Method::PUT,
            &path,
            Some(&serde_json::json!({ "state": "KILLED" })),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    use super::*;
    use crate::Error;

    /// A one-thread HTTP server on a free port that answers each of `answers` once, in order
    /// (status line and headers, then the body); returns its address.
    fn serve(answers: Vec<(&'static str, &'static str)>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for (head, body) in answers {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        addr
    }

    #[test]
    fn the_service_host_comes_from_the_url() {
        let rm = ResourceManager::new("http://rm.example.com:8088/", "u").unwrap();
        assert_eq!(rm.host(), "rm.example.com");
        assert_eq!(rm.url(), "http://rm.example.com:8088");
        assert!(ResourceManager::new("https://rm:8090", "u").is_err());
        assert!(ResourceManager::new("rm:8088", "u").is_err());
    }

    /// An unsecured ResourceManager, and one asking for another scheme than Negotiate: no
    /// Kerberos, and MIT's library is never loaded.
    #[test]
    fn without_negotiate_gssapi_is_never_loaded() {
        let url = serve(vec![
            (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json",
                r#"{"clusterInfo":{"resourceManagerVersion":"3.4.1"}}"#,
            ),
            (
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"",
                "no",
            ),
        ]);
        let rm = ResourceManager::new(&url, "u").unwrap();
        assert_eq!(rm.version().unwrap(), "3.4.1");
        match rm.version() {
            Err(Error::Http { status: 401, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(rm.negotiations(), 0);
        assert!(!crate::spnego::loaded());
    }
}
