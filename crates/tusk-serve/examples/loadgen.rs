//! An open-loop HTTP load generator (wrk2's idea): requests are scheduled at a fixed rate and
//! each latency is measured from its scheduled start, so a stalled server is charged for the
//! requests it delayed (no coordinated omission).
//!
//!     cargo run --release -p tusk-serve --example loadgen -- \
//!         ADDR PATH BODY_FILE RATE SECONDS [CONNECTIONS]
//!
//! Prints one JSON line: requests, errors (non-2xx or failed), achieved rate, p50/p90/p99/p999
//! and max latency in milliseconds, and the model versions that answered.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// One request; (status, x-model-version) or an error.
    fn send(&mut self, req: &[u8]) -> std::io::Result<(u16, Option<String>)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.stream = Some(BufReader::new(s));
        }
        let r = self.exchange(req);
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    fn exchange(&mut self, req: &[u8]) -> std::io::Result<(u16, Option<String>)> {
        let s = self.stream.as_mut().expect("connected");
        s.get_mut().write_all(req)?;
        let mut line = String::new();
        s.read_line(&mut line)?;
        let code: u16 = line
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut len, mut version) = (0usize, None);
        loop {
            line.clear();
            s.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "x-model-version" => version = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body)?;
        Ok((code, version))
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: loadgen ADDR PATH BODY_FILE RATE SECONDS [CONNECTIONS]");
        std::process::exit(2);
    }
    let (addr, path) = (a[1].clone(), a[2].clone());
    let body = std::fs::read(&a[3]).unwrap_or_else(|e| {
        eprintln!("error: {}: {e}", a[3]);
        std::process::exit(1)
    });
    let num = |i: usize, what: &str| -> f64 {
        match a.get(i).map(|v| v.parse::<f64>()) {
            Some(Ok(v)) if v > 0.0 && v.is_finite() => v,
            _ => {
                eprintln!(
                    "error: {what} must be a positive number, got {:?}",
                    a.get(i)
                );
                std::process::exit(2)
            }
        }
    };
    let (rate, secs) = (num(4, "RATE"), num(5, "SECONDS"));
    let conns = if a.len() > 6 {
        num(6, "CONNECTIONS") as usize
    } else {
        64
    };
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, req) = (addr.clone(), req.clone());
            std::thread::spawn(move || {
                let mut conn = Conn { addr, stream: None };
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut versions: BTreeMap<String, u64> = BTreeMap::new();
                for i in (c..total).step_by(conns) {
                    let due = start + interval * i as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    match conn.send(&req) {
                        Ok((code, v)) => {
                            if !(200..300).contains(&code) {
                                errors += 1;
                            }
                            if let Some(v) = v {
                                *versions.entry(v).or_default() += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                    lat.push(due.elapsed().as_secs_f64() * 1e3);
                }
                (lat, errors, versions)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0;
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for h in handles {
        let Ok((l, e, v)) = h.join() else {
            eprintln!("error: a load thread failed");
            std::process::exit(1)
        };
        lat.extend(l);
        errors += e;
        for (k, n) in v {
            *versions.entry(k).or_default() += n;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(|x, y| x.total_cmp(y));
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{{\"requests\": {}, \"errors\": {errors}, \"rate\": {:.1}, \"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"p999_ms\": {:.3}, \"max_ms\": {:.3}, \"versions\": {}}}",
        lat.len(),
        lat.len() as f64 / elapsed,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        lat.last().copied().unwrap_or(f64::NAN),
        versions.len()
    );
}
