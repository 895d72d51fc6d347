//! JSON over HTTP to Hadoop's web services (the ResourceManager's REST API, the NameNode's
//! WebHDFS), with Kerberos when the server asks for it.
//!
//! Plain HTTP, with `user.name` where a user is given (simple authentication, the default of
//! an unsecured cluster). A secured server (`hadoop.http.authentication.type = kerberos`, or
//! WebHDFS with `dfs.web.authentication.kerberos.principal`) answers `401` with
//! `WWW-Authenticate: Negotiate`; then, and only then, the call is repeated once with a SPNEGO
//! token from the user's Kerberos ticket cache ([`crate::spnego`]), and the `hadoop.auth`
//! cookie the server sets is sent with every later call, so one negotiation serves a whole job
//! (another happens only when the cookie expires).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// How errors name a ResourceManager.
pub(crate) const RESOURCE_MANAGER: &str = "YARN ResourceManager";

/// How errors name a NameNode's web server.
pub(crate) const NAME_NODE: &str = "HDFS NameNode (WebHDFS)";

/// One server's web endpoint.
pub(crate) struct Web {
    base: String,
    /// The host of `base`: the Kerberos service is `HTTP@host`.
    host: String,
    /// How errors name the server.
    server: &'static str,
    /// `user.name` for every call (simple authentication), if any.
    user: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    /// `hadoop.auth=…`, the signed cookie a secured server sets once a Kerberos token was
    /// accepted.
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

/// An error and its sources, on one line (each source once: reqwest repeats itself).
pub fn chain(e: &dyn std::error::Error) -> String {
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

impl Web {
    /// `url`: the server's web address, `http://HOST:PORT`; `expected` says what that is in
    /// the error for anything else.
    pub(crate) fn new(
        url: &str,
        server: &'static str,
        user: Option<&str>,
        expected: &str,
    ) -> Result<Web> {
        let base = url.trim_end_matches('/').to_string();
        let host = reqwest::Url::parse(&base)
            .ok()
            .filter(|u| u.scheme() == "http")
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()));
        let Some(host) = host else {
            return Err(Error::Usage(format!(
                "{url}: expected {expected}; https is not supported"
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
        Ok(Web {
            base,
            host,
            server,
            user: user.map(str::to_string),
            http,
            rt,
            auth_cookie: Mutex::new(None),
            negotiations: AtomicUsize::new(0),
        })
    }

    /// Kerberos (SPNEGO) tokens sent so far.
    pub(crate) fn negotiations(&self) -> usize {
        self.negotiations.load(Ordering::Relaxed)
    }

    /// The web address given.
    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// The host of the web address.
    pub(crate) fn host(&self) -> &str {
        &self.host
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
            .header("Accept", "application/json");
        if let Some(u) = &self.user {
            req = req.query(&[("user.name", u.as_str())]);
        }
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
                    .filter_map(|v| v.to_str().ok().and_then(crate::spnego::hadoop_auth_cookie))
                    .collect();
                let s = r.status().as_u16();
                Ok::<_, reqwest::Error>((s, negotiate, cookies, r.text().await?))
            })
            .map_err(|e| Error::Unreachable {
                server: self.server,
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

    /// `method path` (path and query), the answer's JSON (`Null` for an empty body).
    pub(crate) fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut answer = self.send(&method, &url, body, None)?;
        if answer.status == 401 && answer.negotiate {
            // A secured server (or an expired cookie): once more with a Kerberos token.
            *self.cookie() = None;
            let token =
                crate::spnego::authorization(&self.host).map_err(|reason| Error::Kerberos {
                    server: self.server,
                    url: url.clone(),
                    reason,
                })?;
            self.negotiations.fetch_add(1, Ordering::Relaxed);
            answer = self.send(&method, &url, body, Some(&token))?;
            if answer.status == 401 {
                return Err(Error::Kerberos {
                    server: self.server,
                    url,
                    reason: format!(
                        "the server refused the Kerberos token for HTTP@{} (401 again: {}); check that the ticket (`klist`) is of the server's realm and that its SPNEGO principal is HTTP/{}",
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
            return Err(Error::Http {
                server: self.server,
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
            server: self.server,
            url,
            reason: format!("not JSON: {e}"),
            body: text.chars().take(300).collect(),
        })
    }

    /// An answer without `what`.
    pub(crate) fn protocol(&self, path: &str, what: &str, v: &Value) -> Error {
        Error::Protocol {
            server: self.server,
            url: format!("{}{path}", self.base),
            reason: format!("no {what}"),
            body: v.to_string().chars().take(300).collect(),
        }
    }
}
