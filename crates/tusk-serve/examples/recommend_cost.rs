//! CPU time of one `:recommend` answer, without HTTP: `recommend_cost MODEL_URL [USER] [CALLS]`.
//! Loads the newest version, prepares its catalogue as the server does, then times `CALLS`
//! answers of `{"user_id": USER, "k": 10, "exclude_seen": true}` (k = 10 of the catalogue) and
//! prints the mean and the fastest call in microseconds.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("usage: recommend_cost MODEL_URL [USER] [CALLS]");
    let user: i64 = args.get(2).map_or(42, |s| s.parse().expect("USER"));
    let calls: usize = args.get(3).map_or(2000, |s| s.parse().expect("CALLS"));
    let storage = tusk_storage::Storage::new().expect("storage");
    if std::env::var("LOADS").is_ok() {
        for _ in 0..20 {
            let t = Instant::now();
            let sc = tusk_train::Scorer::load(&storage, url, None).expect("load the model");
            let l = t.elapsed();
            let req = serde_json::json!({"user_id": 1, "k": 10});
            tusk_serve::recommend::answer(&sc, &req, 10_000, &[]).expect("answer");
            println!(
                "load {:.1} ms, + catalogue and one answer {:.1} ms",
                l.as_secs_f64() * 1e3,
                (t.elapsed() - l).as_secs_f64() * 1e3
            );
        }
        return;
    }
    let sc = tusk_train::Scorer::load(&storage, url, None).expect("load the model");
    let req = serde_json::json!({"user_id": user, "k": 10, "exclude_seen": true});
    let first = tusk_serve::recommend::answer(&sc, &req, 10_000, &[]).expect("answer");
    let mut best = f64::INFINITY;
    let t = Instant::now();
    for _ in 0..calls {
        let c = Instant::now();
        let a = tusk_serve::recommend::answer(&sc, &req, 10_000, &[]).expect("answer");
        best = best.min(c.elapsed().as_secs_f64());
        assert_eq!(a, first, "answers differ between calls");
    }
    let mean = t.elapsed().as_secs_f64() / calls as f64;
    println!("{}", first["items"]);
    println!(
        "mean {:.1} us, fastest {:.1} us over {calls} calls",
        mean * 1e6,
        best * 1e6
    );
}
