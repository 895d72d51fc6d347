//! The MovieLens example end to end: `examples/movielens/run.sh OUT` from the raw u.data to a
//! model that must reach HR@10 ≥ 0.63 and NDCG@10 ≥ 0.36 on the leave-one-out test split
//! (epochs chosen on validation), then batch scoring of a `user_id,item_id` CSV.
//! Needs ../shared/data/movielens-100k/u.data: skipped without it, except in CI.

use std::process::Command;

#[test]
fn neumf_on_movielens_reaches_the_target() {
    let udata = tusk_testkit::repo_root().join("../shared/data/movielens-100k/u.data");
    let found = if udata.exists() {
        Ok(udata.clone())
    } else {
        Err(format!("{} not found", udata.display()))
    };
    let Some(udata) = tusk_testkit::require("MovieLens-100K", "TUSK_REQUIRE_MOVIELENS", found)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ml");
    let tusk = env!("CARGO_BIN_EXE_tusk");
    let o = Command::new("bash")
        .arg(tusk_testkit::repo_root().join("examples/movielens/run.sh"))
        .arg(&out)
        .arg(&udata)
        .env("TUSK", tusk)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let model = out.join("model").display().to_string();
    let test = out.join("data/test").display().to_string();
    let o = Command::new(tusk)
        .args(["eval", "--model", &model, "--data", &test, "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (hr, ndcg) = (m["hr@10"].as_f64().unwrap(), m["ndcg@10"].as_f64().unwrap());
    eprintln!("MovieLens-100K test: HR@10 {hr:.4}, NDCG@10 {ndcg:.4}");
    assert!(hr >= 0.63, "HR@10 {hr}");
    assert!(ndcg >= 0.36, "NDCG@10 {ndcg}");
    assert_eq!(m["groups"].as_f64(), Some(943.0));

    let pairs = dir.path().join("pairs.csv");
    std::fs::write(&pairs, "user_id,item_id\n1,1\n1,50\n943,1682\n").unwrap();
    let scores = dir.path().join("scores.csv");
    let o = Command::new(tusk)
        .args(["predict", "--model", &model, "--input"])
        .arg(&pairs)
        .arg("--output")
        .arg(&scores)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&scores).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "user_id,item_id,score");
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with("943,1682,"));
}
