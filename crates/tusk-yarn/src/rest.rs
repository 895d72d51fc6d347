//! The ResourceManager's REST API (Hadoop 3): the calls a submitting client needs.
//!
//! Plain HTTP with `user.name` (simple authentication, the default of an unsecured cluster).
//! On a secured cluster (`hadoop.http.authentication.type = kerberos`) the ResourceManager
//! answers `401` with `WWW-Authenticate: Negotiate`; then, and only then, the call is repeated
//! once with a SPNEGO token from the user's Kerberos ticket cache ([`crate::spnego`]), and the
//! `hadoop.auth` cookie the server sets is sent with every later call, so one negotiation
//! serves a whole job (another happens only when the cookie expires).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// A ResourceManager's REST endpoint.
pub struct ResourceManager {
    base: String,
    /// The host of `base`: the Kerberos service is `HTTP@host`.
    host: String,
    user: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    /// `hadoop.auth=…`, the signed cookie a secured ResourceManager sets once a Kerberos
    /// token was accepted.
    auth_cookie: Mutex<Option<String>>,
    /// Kerberos tokens sent so far.
    negotiations: AtomicUsize,
}

/// One HTTP answer.
struct Answer {
    status: u16,
    /// `WWW-Authenticate: Negotiate` (the server wants Kerberos).
    negotiate: bool,
    text: String,
}

/// The `hadoop.auth` cookie in a `Set-Cookie` value: `Some(Some("hadoop.auth=…"))` to keep,
/// `Some(None)` when the server clears it (an empty value), `None` for other cookies.
fn hadoop_auth_cookie(set_cookie: &str) -> Option<Option<String>> {
    let pair = set_cookie.split(';').next()?.trim();
    let (name, value) = pair.split_once('=')?;
    if name.trim() != "hadoop.auth" {
        return None;
    }
    let v = value.trim();
    Some((!v.is_empty() && v != "\"\"").then(|| format!("hadoop.auth={v}")))
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
        let host = reqwest::Url::parse(&base)
            .ok()
            .filter(|u| u.scheme() == "http")
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()));
        let Some(host) = host else {
            return Err(Error::Usage(format!(
                "--yarn {url}: expected the ResourceManager's web address, http://HOST:PORT (e.g. http://rm:8088); https is not supported"
            )));
        };
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
            host,
            user: user.to_string(),
            http,
            rt,
            auth_cookie: Mutex::new(None),
            negotiations: AtomicUsize::new(0),
        })
    }

    /// How many Kerberos (SPNEGO) tokens this client has sent: 0 on an unsecured cluster, 1
    /// for any number of calls to a secured one while its `hadoop.auth` cookie is valid.
    pub fn negotiations(&self) -> usize {
        self.negotiations.load(Ordering::Relaxed)
    }

    /// The web address given.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn cookie(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.auth_cookie
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One request; `authorization` is a `Negotiate …` header value. Keeps the `hadoop.auth`
    /// cookie of the answer.
    fn send(
        &self,
        method: &reqwest::Method,
        url: &str,
        body: Option<&Value>,
        authorization: Option<&str>,
    ) -> Result<Answer> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .query(&[("user.name", self.user.as_str())])
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        if let Some(c) = self.cookie().as_deref() {
            req = req.header("Cookie", c);
        }
        let (status, negotiate, cookies, text) = self
            .rt
            .block_on(async {
                let r = req.send().await?;
                let negotiate = r.headers().get_all("WWW-Authenticate").iter().any(|v| {
                    v.to_str().is_ok_and(|v| {
                        v.trim_start()
                            .get(..9)
                            .is_some_and(|s| s.eq_ignore_ascii_case("negotiate"))
                    })
                });
                let cookies: Vec<Option<String>> = r
                    .headers()
                    .get_all("Set-Cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok().and_then(hadoop_auth_cookie))
                    .collect();
                let s = r.status().as_u16();
                Ok::<_, reqwest::Error>((s, negotiate, cookies, r.text().await?))
            })
            .map_err(|e| Error::Unreachable {
                url: url.to_string(),
                reason: chain(&e),
            })?;
        if let Some(c) = cookies.into_iter().last() {
            *self.cookie() = c;
        }
        Ok(Answer {
            status,
            negotiate,
            text,
        })
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut answer = self.send(&method, &url, body, None)?;
        if answer.status == 401 && answer.negotiate {
            // A secured ResourceManager (or an expired cookie): once more with a Kerberos token.
            *self.cookie() = None;
            let token =
                crate::spnego::authorization(&self.host).map_err(|reason| Error::Kerberos {
                    url: url.clone(),
                    reason,
                })?;
            self.negotiations.fetch_add(1, Ordering::Relaxed);
            answer = self.send(&method, &url, body, Some(&token))?;
            if answer.status == 401 {
                return Err(Error::Kerberos {
                    url,
                    reason: format!(
                        "the ResourceManager refused the Kerberos token for HTTP@{} (401 again: {}); check that the ticket (`klist`) is of the ResourceManager's realm and that the ResourceManager's SPNEGO principal is HTTP/{}",
                        self.host,
                        answer.text.chars().take(200).collect::<String>().trim(),
                        self.host
                    ),
                });
            }
        }
        let Answer { status, text, .. } = answer;
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

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    use super::*;

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
    fn hadoop_auth_cookie_is_kept_and_cleared() {
        assert_eq!(
            hadoop_auth_cookie(
                r#"hadoop.auth="u=tusk&p=tusk@EXAMPLE.COM&t=kerberos&e=1&s=x="; Path=/; HttpOnly"#
            ),
            Some(Some(
                r#"hadoop.auth="u=tusk&p=tusk@EXAMPLE.COM&t=kerberos&e=1&s=x=""#.to_string()
            ))
        );
        assert_eq!(
            hadoop_auth_cookie("hadoop.auth=; Path=/; HttpOnly"),
            Some(None)
        );
        assert_eq!(hadoop_auth_cookie("JSESSIONID=abc; Path=/"), None);
    }

    #[test]
    fn the_service_host_comes_from_the_url() {
        let rm = ResourceManager::new("http://rm.example.com:8088/", "u").unwrap();
        assert_eq!(rm.host, "rm.example.com");
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
            Err(Error::Rm { status: 401, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(rm.negotiations(), 0);
        assert!(!crate::spnego::loaded());
    }
}
