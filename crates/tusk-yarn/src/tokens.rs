//! HDFS delegation tokens for a job on a Kerberos-secured cluster.
//!
//! On a secured HDFS (`hadoop.security.authentication = kerberos`) nothing inside a YARN
//! container has a Kerberos ticket: the NodeManager downloads the staged files, and the
//! application master and the workers reach HDFS, with the *delegation tokens* the submitter
//! put into the application's credentials (YARN writes them to the file that
//! `HADOOP_TOKEN_FILE_LOCATION` names in every container; the ResourceManager renews them
//! while the application runs and cancels them when it ends). Hadoop's own clients get them
//! over Hadoop RPC; tusk's HDFS client (hdfs-native) cannot, so the launcher asks the
//! NameNode's web server instead — WebHDFS `GETDELEGATIONTOKEN`, authenticated with the
//! user's ticket over SPNEGO — and re-labels the answer (kind `WEBHDFS delegation`, service the
//! HTTP address) as the RPC token it also is (kind `HDFS_DELEGATION_TOKEN`, service the
//! NameNode's RPC address: the identifier and password are the NameNode's either way).
//!
//! The token goes in once per service name a client may look it up by: Hadoop's Java clients
//! (the NodeManager's localizer, the application master) by the resolved `IP:port`, hdfs-native
//! by the address exactly as the job's URLs write it, and both by `ha-hdfs:NAMESERVICE` for an
//! HA nameservice.
//!
//! Tokens the user already has (`HADOOP_TOKEN_FILE_LOCATION` on the submitting machine, e.g.
//! from `hdfs fetchdt`) are passed on as they are, and cover their file systems.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::web::{NAME_NODE, Web};
use crate::{Error, Result};

/// The kind of an HDFS RPC delegation token.
pub const HDFS_DELEGATION_TOKEN: &str = "HDFS_DELEGATION_TOKEN";

/// The NameNode's RPC port when a URL names none.
const DEFAULT_RPC_PORT: u16 = 8020;

/// The NameNode's HTTP port (Hadoop 3) when the configuration names none.
const DEFAULT_HTTP_PORT: u16 = 9870;

/// Hadoop's URL-safe base64 (`Token.encodeToUrlString`): no padding written, either read.
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `org.apache.hadoop.security.token.Token`: what a delegation token is on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The server's token identifier (owner, renewer, dates, sequence number, key id).
    pub identifier: Vec<u8>,
    /// The server's HMAC of the identifier.
    pub password: Vec<u8>,
    /// `HDFS_DELEGATION_TOKEN`, `WEBHDFS delegation`, …
    pub kind: String,
    /// The address clients look it up by.
    pub service: String,
}

/// What a delegation token identifier says (`AbstractDelegationTokenIdentifier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    /// Who the token is for.
    pub owner: String,
    /// Who may renew it.
    pub renewer: String,
    /// The real user behind a proxy user (empty if none).
    pub real_user: String,
    /// Issued, ms since the epoch.
    pub issue_date: i64,
    /// Last possible renewal, ms since the epoch.
    pub max_date: i64,
    /// The server's sequence number.
    pub sequence_number: i32,
}

/// Hadoop's `WritableUtils.writeVLong`.
fn write_vlong(out: &mut Vec<u8>, mut i: i64) {
    if (-112..=127).contains(&i) {
        out.push(i as u8);
        return;
    }
    let mut len: i32 = -112;
    if i < 0 {
        i ^= -1;
        len = -120;
    }
    let mut tmp = i;
    while tmp != 0 {
        tmp >>= 8;
        len -= 1;
    }
    out.push(len as u8);
    let n = if len < -120 {
        -(len + 120)
    } else {
        -(len + 112)
    };
    for idx in (0..n).rev() {
        out.push(((i >> (idx * 8)) & 0xff) as u8);
    }
}

/// Reads Hadoop's `Writable` encodings from a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn byte(&mut self) -> std::result::Result<u8, String> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| format!("ends at byte {}", self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(format!(
                "{n} bytes wanted at byte {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            ));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// `WritableUtils.readVLong`.
    fn vlong(&mut self) -> std::result::Result<i64, String> {
        let first = self.byte()? as i8;
        if first >= -112 {
            return Ok(i64::from(first));
        }
        let negative = first < -120;
        let n = (if negative { -119 - first } else { -111 - first }) as usize - 1;
        let mut v: i64 = 0;
        for _ in 0..n {
            v = (v << 8) | i64::from(self.byte()?);
        }
        Ok(if negative { v ^ -1 } else { v })
    }

    /// A length written as a vint, checked.
    fn len(&mut self) -> std::result::Result<usize, String> {
        let at = self.pos;
        let n = self.vlong()?;
        usize::try_from(n).map_err(|_| format!("negative length {n} at byte {at}"))
    }

    /// `Text`: a vint length and UTF-8.
    fn text(&mut self) -> std::result::Result<String, String> {
        let n = self.len()?;
        let at = self.pos;
        String::from_utf8(self.bytes(n)?.to_vec()).map_err(|_| format!("not UTF-8 at byte {at}"))
    }

    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

impl Token {
    /// The `Writable` form (`Token.write`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.identifier.len() + self.password.len() + 64);
        for b in [&self.identifier[..], &self.password[..]] {
            write_vlong(&mut out, b.len() as i64);
            out.extend_from_slice(b);
        }
        for t in [&self.kind, &self.service] {
            write_vlong(&mut out, t.len() as i64);
            out.extend_from_slice(t.as_bytes());
        }
        out
    }

    /// Reads the `Writable` form.
    pub fn from_bytes(b: &[u8]) -> std::result::Result<Token, String> {
        let mut r = Reader::new(b);
        let t = Token::read(&mut r)?;
        if !r.done() {
            return Err(format!("{} bytes after the token", b.len() - r.pos));
        }
        Ok(t)
    }

    /// One token in the `Writable` form, from where `r` stands.
    fn read(r: &mut Reader<'_>) -> std::result::Result<Token, String> {
        let identifier = r.len().and_then(|n| r.bytes(n))?.to_vec();
        let password = r.len().and_then(|n| r.bytes(n))?.to_vec();
        Ok(Token {
            identifier,
            password,
            kind: r.text()?,
            service: r.text()?,
        })
    }

    /// `Token.encodeToUrlString`: what the ResourceManager's REST API takes in an
    /// application's credentials, and what WebHDFS hands out.
    pub fn to_url_string(&self) -> String {
        URL_SAFE.encode(self.to_bytes())
    }

    /// `Token.decodeFromUrlString`.
    pub fn from_url_string(s: &str) -> std::result::Result<Token, String> {
        let b = URL_SAFE
            .decode(s.trim())
            .map_err(|e| format!("not URL-safe base64: {e}"))?;
        Token::from_bytes(&b)
    }

    /// The identifier's fields, when it is a delegation token identifier.
    pub fn decode_identifier(&self) -> std::result::Result<Identifier, String> {
        let mut r = Reader::new(&self.identifier);
        let version = r.byte()?;
        if version != 0 {
            return Err(format!("identifier version {version}, expected 0"));
        }
        let owner = r.text()?;
        let renewer = r.text()?;
        let real_user = r.text()?;
        let issue_date = r.vlong()?;
        let max_date = r.vlong()?;
        let sequence_number = r.vlong()? as i32;
        Ok(Identifier {
            owner,
            renewer,
            real_user,
            issue_date,
            max_date,
            sequence_number,
        })
    }

    /// The same token under another kind and service.
    pub fn relabelled(&self, kind: &str, service: &str) -> Token {
        Token {
            kind: kind.into(),
            service: service.into(),
            ..self.clone()
        }
    }
}

/// Reads a Hadoop token storage file (`Credentials.writeTokenStorageFile`, both the
/// `Writable` and the protobuf format): `(alias, token)` pairs.
pub fn read_token_file(path: &Path) -> std::result::Result<Vec<(String, Token)>, String> {
    let b = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_token_storage(&b).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a Hadoop token storage file (the `Writable` format, which every Hadoop version
/// reads), atomically: what `HADOOP_TOKEN_FILE_LOCATION` can name.
pub fn write_token_file(path: &Path, tokens: &[(String, Token)]) -> std::io::Result<()> {
    let mut b = b"HDTS\x00".to_vec();
    write_vlong(&mut b, tokens.len() as i64);
    for (alias, t) in tokens {
        write_vlong(&mut b, alias.len() as i64);
        b.extend_from_slice(alias.as_bytes());
        b.extend_from_slice(&t.to_bytes());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
    std::io::Write::write_all(&mut tmp, &b)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn parse_token_storage(b: &[u8]) -> std::result::Result<Vec<(String, Token)>, String> {
    let Some(rest) = b.strip_prefix(b"HDTS") else {
        return Err("not a Hadoop token file (no HDTS magic)".into());
    };
    let mut r = Reader::new(rest);
    match r.byte()? {
        0 => {
            let n = r.len()?;
            let mut out = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let alias = r.text()?;
                out.push((alias, Token::read(&mut r)?));
            }
            Ok(out)
        }
        1 => parse_credentials_proto(&rest[1..]),
        v => Err(format!("token file format {v}, expected 0 or 1")),
    }
}

/// Protobuf fields of one message: `(field number, bytes)` for length-delimited fields;
/// varints and fixed-width fields are skipped.
fn proto_fields(b: &[u8]) -> std::result::Result<Vec<(u64, &[u8])>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let varint = |pos: &mut usize| -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*pos).ok_or("truncated varint")?;
            *pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    };
    while pos < b.len() {
        let key = varint(&mut pos)?;
        match key & 7 {
            0 => {
                varint(&mut pos)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let n = usize::try_from(varint(&mut pos)?).map_err(|_| "length too large")?;
                let end = pos
                    .checked_add(n)
                    .filter(|&e| e <= b.len())
                    .ok_or("truncated field")?;
                out.push((key >> 3, &b[pos..end]));
                pos = end;
            }
            t => return Err(format!("unsupported protobuf wire type {t}")),
        }
    }
    if pos > b.len() {
        return Err("truncated field".into());
    }
    Ok(out)
}

/// `CredentialsProto { repeated CredentialsKVProto tokens = 1; … }`, `CredentialsKVProto {
/// alias = 1; TokenProto token = 2; }`, `TokenProto { identifier = 1; password = 2; kind = 3;
/// service = 4; }`.
fn parse_credentials_proto(b: &[u8]) -> std::result::Result<Vec<(String, Token)>, String> {
    let text = |v: &[u8]| String::from_utf8(v.to_vec()).map_err(|_| "not UTF-8".to_string());
    let mut out = Vec::new();
    for (f, kv) in proto_fields(b)? {
        if f != 1 {
            continue;
        }
        let mut alias = String::new();
        let mut token = None;
        for (f, v) in proto_fields(kv)? {
            match f {
                1 => alias = text(v)?,
                2 => {
                    let mut t = Token {
                        identifier: Vec::new(),
                        password: Vec::new(),
                        kind: String::new(),
                        service: String::new(),
                    };
                    for (f, v) in proto_fields(v)? {
                        match f {
                            1 => t.identifier = v.to_vec(),
                            2 => t.password = v.to_vec(),
                            3 => t.kind = text(v)?,
                            4 => t.service = text(v)?,
                            _ => {}
                        }
                    }
                    token = Some(t);
                }
                _ => {}
            }
        }
        if let Some(t) = token {
            out.push((alias, t));
        }
    }
    Ok(out)
}

/// A Hadoop client configuration: `core-site.xml`, `hdfs-site.xml` and `yarn-site.xml` of
/// `HADOOP_CONF_DIR` (else `HADOOP_HOME/etc/hadoop`), later files winning, as hdfs-native
/// reads them.
#[derive(Debug, Clone, Default)]
pub struct HadoopConf {
    /// Where it was read from, if anywhere.
    pub dir: Option<PathBuf>,
    values: BTreeMap<String, String>,
}

impl HadoopConf {
    /// Reads the configuration of this process' environment (empty when there is none).
    pub fn load() -> Result<HadoopConf> {
        let dir = std::env::var_os("HADOOP_CONF_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HADOOP_HOME").map(|h| PathBuf::from(h).join("etc/hadoop"))
            });
        match dir {
            Some(d) => HadoopConf::read_dir(&d),
            None => Ok(HadoopConf::default()),
        }
    }

    /// Reads the three files of `dir` (missing ones are skipped).
    pub fn read_dir(dir: &Path) -> Result<HadoopConf> {
        let mut values = BTreeMap::new();
        for name in ["core-site.xml", "hdfs-site.xml", "yarn-site.xml"] {
            let path = dir.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Io {
                        what: format!("reading {}", path.display()),
                        source: e,
                    });
                }
            };
            let doc = roxmltree::Document::parse(&text)
                .map_err(|e| Error::Usage(format!("{}: not XML: {e}", path.display())))?;
            for p in doc.descendants().filter(|n| n.has_tag_name("property")) {
                let child = |tag: &str| {
                    p.children()
                        .find(|c| c.has_tag_name(tag))
                        .and_then(|c| c.text())
                        .map(|t| t.trim().to_string())
                };
                if let (Some(k), Some(v)) = (child("name"), child("value")) {
                    values.insert(k, v);
                }
            }
        }
        Ok(HadoopConf {
            dir: Some(dir.to_path_buf()),
            values,
        })
    }

    /// A configuration from key/value pairs (tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> HadoopConf {
        HadoopConf {
            dir: None,
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A setting.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether HDFS asks for Kerberos (`hadoop.security.authentication = kerberos`).
    pub fn kerberos(&self) -> bool {
        self.get("hadoop.security.authentication")
            .is_some_and(|v| v.eq_ignore_ascii_case("kerberos"))
    }

    /// Where the text of errors says to look.
    pub(crate) fn source(&self) -> String {
        match &self.dir {
            Some(d) => format!("the Hadoop configuration in {}", d.display()),
            None => "the Hadoop configuration (HADOOP_CONF_DIR is not set)".into(),
        }
    }
}

/// The `IP:port` forms of `host:port` (what Hadoop's Java clients name a token's service by).
fn resolved(authority: &str) -> Vec<String> {
    let mut out: Vec<String> = authority
        .to_socket_addrs()
        .map(|a| {
            a.filter(std::net::SocketAddr::is_ipv4)
                .map(|a| a.to_string())
                .collect()
        })
        .unwrap_or_default();
    out.dedup();
    out
}

/// `host:port` with a port (the default one added when missing).
fn with_port(authority: &str, port: u16) -> String {
    match authority.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => authority.to_string(),
        _ => format!("{authority}:{port}"),
    }
}

/// One NameNode (or HA nameservice) a job touches: the service names its token goes in
/// under, and the web addresses that can hand one out (HA: each NameNode's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSystem {
    /// `hdfs://AUTHORITY`, as the job writes it.
    pub url: String,
    /// Service names, the first being Hadoop's own.
    pub services: Vec<String>,
    /// `host:port` of the NameNode web servers to ask.
    pub web: Vec<String>,
}

impl FileSystem {
    /// Where `hdfs://{authority}` is, by `conf`.
    pub fn locate(authority: &str, conf: &HadoopConf) -> FileSystem {
        let url = format!("hdfs://{authority}");
        // An HA nameservice: `hdfs://NS` and `dfs.ha.namenodes.NS`.
        if !authority.contains(':') {
            let nns = conf.list(&format!("dfs.ha.namenodes.{authority}"));
            if !nns.is_empty() {
                let web = nns
                    .iter()
                    .filter_map(|nn| {
                        let key = format!("dfs.namenode.http-address.{authority}.{nn}");
                        let rpc = conf.get(&format!("dfs.namenode.rpc-address.{authority}.{nn}"));
                        conf.get(&key).map(|h| bind_any(h, rpc))
                    })
                    .collect();
                return FileSystem {
                    url,
                    services: vec![format!("ha-hdfs:{authority}")],
                    web,
                };
            }
        }
        let rpc = with_port(authority, DEFAULT_RPC_PORT);
        let ips = resolved(&rpc);
        let same = |addr: &str| {
            let addr = with_port(addr, DEFAULT_RPC_PORT);
            addr == rpc || resolved(&addr).iter().any(|a| ips.contains(a))
        };
        let mut web = None;
        // Named NameNodes: `dfs.namenode.rpc-address[.NS[.NN]]` next to its http-address.
        let mut suffixes = vec![String::new()];
        for ns in conf.list("dfs.nameservices") {
            suffixes.push(format!(".{ns}"));
            for nn in conf.list(&format!("dfs.ha.namenodes.{ns}")) {
                suffixes.push(format!(".{ns}.{nn}"));
            }
        }
        for s in &suffixes {
            if let Some(r) = conf.get(&format!("dfs.namenode.rpc-address{s}"))
                && same(r)
                && let Some(h) = conf.get(&format!("dfs.namenode.http-address{s}"))
            {
                web = Some(bind_any(h, Some(&rpc)));
                break;
            }
        }
        // The default file system's NameNode.
        if web.is_none()
            && let Some(default) = conf
                .get("fs.defaultFS")
                .and_then(|d| d.strip_prefix("hdfs://"))
                .map(|d| d.split('/').next().unwrap_or(d))
            && same(default)
            && let Some(h) = conf.get("dfs.namenode.http-address")
        {
            web = Some(bind_any(h, Some(&rpc)));
        }
        let host = rpc.rsplit_once(':').map_or(rpc.as_str(), |(h, _)| h);
        let web = web.unwrap_or_else(|| format!("{host}:{DEFAULT_HTTP_PORT}"));
        let mut services = ips;
        for s in [rpc.clone(), authority.to_string()] {
            if !services.contains(&s) {
                services.push(s);
            }
        }
        FileSystem {
            url,
            services,
            web: vec![web],
        }
    }
}

/// An http-address bound to every interface (`0.0.0.0:9870`) is reached at the RPC host.
fn bind_any(http: &str, rpc: Option<&str>) -> String {
    match (http.strip_prefix("0.0.0.0:"), rpc) {
        (Some(port), Some(rpc)) => {
            let host = rpc.rsplit_once(':').map_or(rpc, |(h, _)| h);
            format!("{host}:{port}")
        }
        _ => http.to_string(),
    }
}

/// Every `hdfs://AUTHORITY` in `texts` (URLs in arguments, in a config file), in order.
pub fn hdfs_authorities<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in texts {
        for (i, _) in t.match_indices("hdfs://") {
            // `webhdfs://` is another scheme.
            if i > 0 && t.as_bytes()[i - 1].is_ascii_alphanumeric() {
                continue;
            }
            let rest = &t[i + "hdfs://".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || ".-_:[]".contains(c)))
                .unwrap_or(rest.len());
            let a = &rest[..end];
            if !a.is_empty() && !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
        }
    }
    out
}

/// The principal that renews the job's tokens: the ResourceManager's
/// (`yarn.resourcemanager.principal`, `_HOST` being its host).
pub fn renewer(principal: &str, rm_host: &str) -> String {
    principal.replace("_HOST", &rm_host.to_ascii_lowercase())
}

/// Asks the NameNode web server at `web` (`host:port`) for a delegation token renewable by
/// `renewer`, with the user's Kerberos ticket.
pub fn fetch(web: &str, renewer: &str) -> Result<Token> {
    let client = Web::new(
        &format!("http://{web}"),
        NAME_NODE,
        None,
        "the NameNode's web address, HOST:PORT",
    )?;
    let mut path = String::from("/webhdfs/v1/?op=GETDELEGATIONTOKEN&renewer=");
    for b in renewer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    let v = client.call(reqwest::Method::GET, &path, None)?;
    let s = v["Token"]["urlString"]
        .as_str()
        .ok_or_else(|| client.protocol(&path, "Token.urlString", &v))?;
    Token::from_url_string(s).map_err(|e| Error::Protocol {
        server: NAME_NODE,
        url: format!("{}{path}", client.url()),
        reason: format!("Token.urlString is not a token: {e}"),
        body: s.chars().take(100).collect(),
    })
}

/// The credentials a job's containers need on a secured HDFS: for each file system in
/// `authorities`, the user's own tokens for it (`HADOOP_TOKEN_FILE_LOCATION`), else a new
/// one from its NameNode, renewable by `renewer`; `(alias, token)` pairs, one per service
/// name. `log` is told what was done.
pub fn for_job(
    authorities: &[String],
    conf: &HadoopConf,
    renewer: &str,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<(String, Token)>> {
    let mut own: Vec<(String, Token)> = Vec::new();
    if let Some(path) = std::env::var_os("HADOOP_TOKEN_FILE_LOCATION") {
        let path = PathBuf::from(path);
        own = read_token_file(&path).map_err(|reason| Error::Token {
            fs: "HADOOP_TOKEN_FILE_LOCATION".into(),
            reason,
        })?;
        log(&format!(
            "{} token(s) from HADOOP_TOKEN_FILE_LOCATION={} passed on",
            own.len(),
            path.display()
        ));
    }
    let mut out = own.clone();
    for a in authorities {
        let fs = FileSystem::locate(a, conf);
        let covered = own
            .iter()
            .any(|(_, t)| t.kind == HDFS_DELEGATION_TOKEN && fs.services.contains(&t.service));
        if covered {
            continue;
        }
        if fs.web.is_empty() {
            return Err(Error::Token {
                fs: fs.url,
                reason: format!(
                    "no dfs.namenode.http-address.{a}.* in {} for the nameservice's NameNodes",
                    conf.source()
                ),
            });
        }
        let mut failures = Vec::new();
        let mut token = None;
        for web in &fs.web {
            match fetch(web, renewer) {
                Ok(t) => {
                    token = Some((web, t));
                    break;
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        let Some((web, token)) = token else {
            return Err(Error::Token {
                fs: fs.url,
                reason: format!(
                    "{} (tusk asks the NameNode's web server, WebHDFS GETDELEGATIONTOKEN over SPNEGO, at the dfs.namenode.http-address of {}, else port {DEFAULT_HTTP_PORT}; or pass tokens fetched otherwise with HADOOP_TOKEN_FILE_LOCATION)",
                    failures.join("; "),
                    conf.source()
                ),
            });
        };
        let about = match token.decode_identifier() {
            Ok(id) => format!(
                "owner {}, renewer {}, sequence number {}",
                id.owner, id.renewer, id.sequence_number
            ),
            Err(e) => format!("identifier not decoded: {e}"),
        };
        log(&format!(
            "HDFS delegation token for {} from http://{web} ({about}), as {}",
            fs.url,
            fs.services.join(", ")
        ));
        for s in &fs.services {
            out.push((s.clone(), token.relabelled(HDFS_DELEGATION_TOKEN, s)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token as Hadoop 3.4's WebHDFS hands it out (`GETDELEGATIONTOKEN`, owner `tusk`,
    /// renewer `hdfs`), byte for byte: the fields were decoded by hand from Hadoop's
    /// `Token.write` layout.
    fn sample() -> Token {
        let mut identifier = vec![0u8];
        for t in ["tusk", "hdfs", ""] {
            identifier.push(t.len() as u8);
            identifier.extend_from_slice(t.as_bytes());
        }
        write_vlong(&mut identifier, 1_765_000_000_000);
        write_vlong(&mut identifier, 1_765_604_800_000);
        write_vlong(&mut identifier, 7);
        write_vlong(&mut identifier, 2);
        Token {
            identifier,
            password: (0..20).collect(),
            kind: "WEBHDFS delegation".into(),
            service: "127.0.0.1:9870".into(),
        }
    }

    #[test]
    fn vlongs_round_trip_as_hadoop_writes_them() {
        // Hadoop's WritableUtils: one byte for -112..=127, else a length byte and the
        // big-endian magnitude (one's complement when negative).
        let cases: &[(i64, &[u8])] = &[
            (0, &[0]),
            (127, &[127]),
            (-112, &[0x90]),
            (128, &[0x8f, 0x80]),
            (255, &[0x8f, 0xff]),
            (256, &[0x8e, 0x01, 0x00]),
            (-113, &[0x87, 0x70]),
            (-256, &[0x87, 0xff]),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            write_vlong(&mut out, *v);
            assert_eq!(&out[..], *bytes, "{v}");
            assert_eq!(Reader::new(bytes).vlong().unwrap(), *v);
        }
        for v in [1_765_000_000_000i64, i64::MAX, i64::MIN, -1, 1 << 40] {
            let mut out = Vec::new();
            write_vlong(&mut out, v);
            assert_eq!(Reader::new(&out).vlong().unwrap(), v);
        }
    }

    #[test]
    fn a_token_round_trips_and_relabels() {
        let t = sample();
        let s = t.to_url_string();
        assert!(
            !s.contains('=') && !s.contains('+') && !s.contains('/'),
            "{s}"
        );
        assert_eq!(Token::from_url_string(&s).unwrap(), t);
        // Padding is accepted, as Hadoop's decoder does.
        let padded = base64::engine::general_purpose::URL_SAFE.encode(t.to_bytes());
        assert_eq!(Token::from_url_string(&padded).unwrap(), t);
        let id = t.decode_identifier().unwrap();
        assert_eq!(
            (
                id.owner.as_str(),
                id.renewer.as_str(),
                id.real_user.as_str()
            ),
            ("tusk", "hdfs", "")
        );
        assert_eq!((id.issue_date, id.sequence_number), (1_765_000_000_000, 7));
        let r = t.relabelled(HDFS_DELEGATION_TOKEN, "127.0.0.1:8020");
        assert_eq!((&r.identifier, &r.password), (&t.identifier, &t.password));
        assert_eq!(r.kind, HDFS_DELEGATION_TOKEN);
        assert!(Token::from_url_string("not a token!").is_err());
        let mut truncated = t.to_bytes();
        truncated.pop();
        assert!(
            Token::from_bytes(&truncated)
                .unwrap_err()
                .contains("bytes wanted")
        );
    }

    #[test]
    fn token_files_of_both_formats_are_read() {
        let t = sample().relabelled(HDFS_DELEGATION_TOKEN, "127.0.0.1:8020");
        // Writable: magic, format 0, count, then alias + token.
        let mut w = b"HDTS\x00".to_vec();
        write_vlong(&mut w, 1);
        write_vlong(&mut w, 14);
        w.extend_from_slice(b"127.0.0.1:8020");
        w.extend_from_slice(&t.to_bytes());
        assert_eq!(
            parse_token_storage(&w).unwrap(),
            vec![("127.0.0.1:8020".to_string(), t.clone())]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        write_token_file(&path, &[("127.0.0.1:8020".to_string(), t.clone())]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), w);
        // Protobuf: CredentialsProto { tokens: [{ alias, token }] }.
        fn field(n: u8, v: &[u8]) -> Vec<u8> {
            let mut out = vec![(n << 3) | 2];
            let mut len = v.len();
            loop {
                let b = (len & 0x7f) as u8;
                len >>= 7;
                if len == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
            out.extend_from_slice(v);
            out
        }
        let token = [
            field(1, &t.identifier),
            field(2, &t.password),
            field(3, t.kind.as_bytes()),
            field(4, t.service.as_bytes()),
        ]
        .concat();
        let kv = [field(1, b"alias"), field(2, &token)].concat();
        let mut p = b"HDTS\x01".to_vec();
        p.extend(field(1, &kv));
        assert_eq!(
            parse_token_storage(&p).unwrap(),
            vec![("alias".to_string(), t)]
        );
        assert!(parse_token_storage(b"HDTX\x00").is_err());
        assert!(
            parse_token_storage(b"HDTS\x07")
                .unwrap_err()
                .contains("format 7")
        );
    }

    #[test]
    fn file_systems_are_found_in_the_urls_of_a_job() {
        let a = hdfs_authorities([
            "train",
            "--model",
            "hdfs://nn.example.com:8020/models/m",
            "[data]\ntrain = \"hdfs://127.0.0.1:9000/d/train.csv\"\nvalid = 'webhdfs://x:9870/v'\nother = \"hdfs://nn.example.com:8020/x\"\nha = hdfs://prod/logs",
        ]);
        assert_eq!(a, ["nn.example.com:8020", "127.0.0.1:9000", "prod"]);
    }

    #[test]
    fn the_name_node_web_address_comes_from_the_configuration() {
        let conf = HadoopConf::from_pairs(&[
            ("fs.defaultFS", "hdfs://localhost:9000"),
            ("dfs.namenode.http-address", "0.0.0.0:50070"),
            ("dfs.nameservices", "prod"),
            ("dfs.ha.namenodes.prod", "nn1, nn2"),
            ("dfs.namenode.rpc-address.prod.nn1", "a.example:8020"),
            ("dfs.namenode.http-address.prod.nn1", "a.example:9870"),
            ("dfs.namenode.rpc-address.prod.nn2", "b.example:8020"),
            ("dfs.namenode.http-address.prod.nn2", "b.example:9870"),
        ]);
        let fs = FileSystem::locate("localhost:9000", &conf);
        assert_eq!(fs.web, ["localhost:50070"]);
        assert_eq!(fs.services[0], "127.0.0.1:9000");
        assert!(fs.services.contains(&"localhost:9000".to_string()));
        let ha = FileSystem::locate("prod", &conf);
        assert_eq!(ha.services, ["ha-hdfs:prod"]);
        assert_eq!(ha.web, ["a.example:9870", "b.example:9870"]);
        // Nothing configured: the port Hadoop 3 serves WebHDFS on.
        let none = FileSystem::locate("127.0.0.1", &HadoopConf::default());
        assert_eq!(none.web, ["127.0.0.1:9870"]);
        assert_eq!(none.services, ["127.0.0.1:8020", "127.0.0.1"]);
        assert_eq!(
            renewer("yarn/_HOST@EXAMPLE.COM", "RM.example.com"),
            "yarn/rm.example.com@EXAMPLE.COM"
        );
    }
}
