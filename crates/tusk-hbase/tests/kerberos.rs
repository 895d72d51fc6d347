//! The REST client against a Kerberos-secured HBase REST gateway: a real HBase (HBase's mini
//! cluster, `testing/minihbase`) whose REST gateway requires SPNEGO with HBase's own
//! `AuthFilter` (`hbase.rest.authentication.type=kerberos`), a MiniKdc, MIT's `kinit` and
//! libgssapi_krb5. Without a ticket a call fails at once with one error that says how to get
//! one; with a ticket tables are created, written, read and scanned, and one SPNEGO token serves
//! every call (the `hadoop.auth` cookie). Skipped without Java/Maven/kinit, except in CI.
//!
//! GSSAPI reads the ticket cache and the krb5.conf from `KRB5CCNAME` and `KRB5_CONFIG`, which a
//! process can only be given at its start (changing the environment of a running process is
//! unsafe code, forbidden here): the client runs in this test binary started again with them,
//! filtered to one of the `child_*` tests (which do nothing in an ordinary run).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tusk_hbase::{Cell, Error, Family, HBase, Options, Row};
use tusk_testkit::{MiniHBase, MiniKerberos};

/// The gateway's URL, for [`child_without_a_ticket`].
const CHILD_NO_TICKET: &str = "TUSK_TEST_HBASE_KERBEROS_NO_TICKET";
/// The gateway's URL, for [`child_with_a_ticket`].
const CHILD_TICKET: &str = "TUSK_TEST_HBASE_KERBEROS_TICKET";

const TABLE: &str = "kerberized";

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Run the test `child` of this binary with `url` in `var`, the MiniKdc's krb5.conf and the
/// ticket cache `cache`; panics unless it passed. Returns its output.
fn run_child(child: &str, var: &str, url: &str, krb: &MiniKerberos, cache: &Path) -> String {
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env(var, url)
        .env("KRB5_CONFIG", &krb.krb5_conf)
        .env("KRB5CCNAME", format!("FILE:{}", cache.display()))
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && out.contains("1 passed"),
        "{child}:\n{out}"
    );
    out
}

/// The gateway refuses a request without credentials (401 Negotiate); without a ticket (no
/// cache, an empty cache) the client fails at once with one error naming Kerberos and `kinit`;
/// with the user's ticket every kind of call works over one negotiation.
#[test]
fn rest_gateway_behind_kerberos() {
    let t0 = Instant::now();
    let Some(hb) = MiniHBase::start_kerberized() else {
        return;
    };
    let started = t0.elapsed();
    let krb = hb.kerberos.as_ref().expect("a kerberized gateway");
    let url = hb.rest_url();
    assert!(url.starts_with("http://localhost:"), "{url}");

    // The gateway is secured: without credentials, 401 and an offer of Negotiate.
    let (status, negotiate) = block(async {
        let r = reqwest::Client::new()
            .get(format!("{url}/version/cluster"))
            .send()
            .await
            .unwrap();
        let negotiate = r
            .headers()
            .get_all("WWW-Authenticate")
            .iter()
            .any(|v| v.to_str().unwrap_or("").trim() == "Negotiate");
        (r.status().as_u16(), negotiate)
    });
    assert_eq!(status, 401);
    assert!(negotiate, "no `WWW-Authenticate: Negotiate`");

    let dir = tempfile::tempdir().unwrap();
    // No ticket: no cache at all, and an empty cache file.
    let absent = dir.path().join("no-ticket");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    for cache in [&absent, &empty] {
        let out = run_child("child_without_a_ticket", CHILD_NO_TICKET, &url, krb, cache);
        for line in out.lines().filter(|l| l.starts_with("without a ticket")) {
            eprintln!("{line}");
        }
    }

    // The user's ticket, from its keytab.
    let cache = dir.path().join("krb5cc");
    krb.kinit(&cache).unwrap();
    run_child("child_with_a_ticket", CHILD_TICKET, &url, krb, &cache);
    eprintln!(
        "Kerberized HBase: started in {started:.0?}, whole test {:.0?}",
        t0.elapsed()
    );
}

/// Child of [`rest_gateway_behind_kerberos`]: a call without a usable ticket fails at once
/// (no retries, no token sent) with one error line that names the gateway, Kerberos, the
/// service and the ticket cache, and says to run `kinit`.
#[test]
fn child_without_a_ticket() {
    let Ok(url) = std::env::var(CHILD_NO_TICKET) else {
        return;
    };
    let cache = std::env::var("KRB5CCNAME").unwrap();
    let h = HBase::new(&url, Options::default()).unwrap();
    let t0 = Instant::now();
    let e = block(h.create_table(
        TABLE,
        &[Family {
            name: "f".into(),
            versions: 1,
        }],
    ))
    .unwrap_err();
    let msg = e.to_string();
    eprintln!("without a ticket ({cache}): {msg}");
    assert!(matches!(e, Error::Http { status: 401, .. }), "{e:?}");
    assert!(!msg.contains('\n'), "more than one line: {msg}");
    let call =
        format!("HBase Kerberos (SPNEGO) authentication (PUT {url}/{TABLE}/schema): HTTP 401");
    for needle in [
        call.as_str(),
        "for HTTP@localhost",
        "run `kinit`",
        "KRB5CCNAME",
        cache.as_str(),
    ] {
        assert!(msg.contains(needle), "no '{needle}' in: {msg}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}: retried?",
        t0.elapsed()
    );
    assert_eq!(h.negotiations(), 0);
}

/// Child of [`rest_gateway_behind_kerberos`]: with a ticket, create a table, put rows, get
/// one, multi-get some (one missing), scan them all and describe the table, over one SPNEGO
/// negotiation (then the `hadoop.auth` cookie); GSSAPI is loaded only once the gateway asked.
#[test]
fn child_with_a_ticket() {
    let Ok(url) = std::env::var(CHILD_TICKET) else {
        return;
    };
    assert!(!tusk_yarn::spnego::loaded());
    let h = HBase::new(&url, Options::default()).unwrap();
    let key = |i: usize| format!("row{i:02}").into_bytes();
    let rows: Vec<Row> = (0..20)
        .map(|i| Row {
            key: key(i),
            cells: vec![Cell {
                column: b"f:a".to_vec(),
                timestamp: None,
                value: format!("value {i}").into_bytes(),
            }],
        })
        .collect();
    block(async {
        h.create_table(
            TABLE,
            &[Family {
                name: "f".into(),
                versions: 3,
            }],
        )
        .await
        .unwrap();
        assert_eq!(h.negotiations(), 1);
        h.put(TABLE, &rows).await.unwrap();

        let one = h.get(TABLE, &key(7), 1).await.unwrap().expect("row07");
        assert_eq!(one.key, key(7));
        assert_eq!(one.cells.len(), 1);
        assert_eq!(one.cells[0].column, b"f:a");
        assert_eq!(one.cells[0].value, b"value 7");

        let some = h
            .multi_get(TABLE, &[&key(3), b"missing", &key(15)], 1)
            .await
            .unwrap();
        let keys: Vec<&[u8]> = some.iter().map(|r| r.key.as_slice()).collect();
        assert_eq!(keys, [key(3).as_slice(), key(15).as_slice()]);
        assert_eq!(some[1].cells[0].value, b"value 15");

        let mut scanned = Vec::new();
        h.scan(TABLE, b"", b"", 1, |batch| {
            scanned.extend(batch);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(scanned.len(), rows.len());
        for (got, put) in scanned.iter().zip(&rows) {
            assert_eq!(got.key, put.key);
            assert_eq!(got.cells.len(), 1);
            assert_eq!(got.cells[0].column, put.cells[0].column);
            assert_eq!(got.cells[0].value, put.cells[0].value);
        }

        let families = h.describe(TABLE).await.unwrap().expect("the table");
        assert_eq!(
            families,
            [Family {
                name: "f".into(),
                versions: 3
            }]
        );
    });
    assert_eq!(
        h.negotiations(),
        1,
        "one negotiation, then the hadoop.auth cookie"
    );
    assert!(tusk_yarn::spnego::loaded());
}
