//! The ResourceManager's REST API (Hadoop 3): the calls a submitting client needs.
//!
//! Plain HTTP with `user.name` (simple authentication, the default of an unsecured cluster).
//! SPNEGO (Kerberos over HTTP) is not spoken: see the README's YARN section.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// A ResourceManager's REST endpoint.
pub struct ResourceManager {
    base: String,
    user: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
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

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl ResourceManager {
    /// `url`: the ResourceManager's web address, e.g. `http://rm:8088`. `user`: the
    /// `user.name` the application runs as.
    pub fn new(url: &str, user: &str) -> Result<ResourceManager> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(Error::Usage(format!(
                "--yarn {url}: expected the ResourceManager's web address, http://HOST:PORT (e.g. http://rm:8088); https is not supported"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Usage(format!("HTTP client: {}", chain(&e))))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                what: "starting the HTTP runtime".into(),
                source: e,
            })?;
        Ok(ResourceManager {
            base,
            user: user.to_string(),
            http,
            rt,
        })
    }

    /// The web address given.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .query(&[("user.name", self.user.as_str())])
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let (status, text) = self
            .rt
            .block_on(async {
                let r = req.send().await?;
                let s = r.status().as_u16();
                Ok::<_, reqwest::Error>((s, r.text().await?))
            })
            .map_err(|e| Error::Unreachable {
                url: url.clone(),
                reason: chain(&e),
            })?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let r = &v["RemoteException"];
                    r["message"].as_str().map(|m| {
                        format!(
                            "{m} ({})",
                            r["exception"].as_str().unwrap_or("RemoteException")
                        )
                    })
                })
                .unwrap_or_else(|| text.chars().take(400).collect());
            return Err(Error::Rm {
                method: method.to_string(),
                url,
                status,
                message,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| Error::Protocol {
            url,
            reason: format!("not JSON: {e}"),
            body: text.chars().take(300).collect(),
        })
    }

    fn protocol(&self, path: &str, what: &str, v: &Value) -> Error {
        Error::Protocol {
            url: format!("{}{path}", self.base),
            reason: format!("no {what}"),
            body: v.to_string().chars().take(300).collect(),
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
