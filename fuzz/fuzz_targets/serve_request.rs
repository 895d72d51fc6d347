//! `tusk serve`'s request decoders on arbitrary bytes, against a real model (trained once per
//! process, with entity tables): the body as JSON → v1 rows (`instances` / `inputs`), v2 tensors, and a
//! recommend request, each scored as the server scores them. Any input must end in rows and
//! scores or in an error message — never a panic — and a score is a probability.

use std::sync::OnceLock;

use tusk_serve::{recommend, rows};
use tusk_train::Scorer;

fn model() -> &'static Scorer {
    static MODEL: OnceLock<(tempfile::TempDir, Scorer)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let d = dir.path();
            let mut train = String::from("user_id,item_id,price,city,label\n");
            for i in 0..200u64 {
                let (u, it) = (i * 7 % 23, i * 5 % 17);
                let city = ["oslo", "lima"][(u % 2) as usize];
                train.push_str(&format!("{u},{it},{}.5,{city},{}\n", it % 5, (u + it) % 2));
            }
            std::fs::write(d.join("train.csv"), train).expect("write");
            std::fs::write(d.join("users.csv"), "user_id,city,seen\n1,oslo,2 3\n2,lima,\n")
                .expect("write");
            std::fs::write(d.join("items.csv"), "item_id,price\n1,2.5\n2,3\n3,9.5\n")
                .expect("write");
            let text = format!(
                "[data]\ntrain = \"{d}/train.csv\"\n[data.entities]\nuser_id = \"{d}/users.csv\"\n\
                 item_id = \"{d}/items.csv\"\n[features]\nsparse = [\"user_id\", \"item_id\", \
                 \"city\"]\ndense = [\"price\"]\nlabel = \"label\"\n[model]\nkind = \"neumf\"\n\
                 user = [\"user_id\", \"city\"]\nitem = [\"item_id\"]\ngmf_dim = 4\nmlp_dim = 4\n\
                 layers = [8]\n[train]\nepochs = 1\nbatch_size = 32\n",
                d = d.display()
            );
            let cfg = tusk_train::Config::parse("fuzz.toml", &text, &[]).expect("config");
            let storage = tusk_storage::Storage::new().expect("storage");
            let url = d.join("model").display().to_string();
            tusk_train::train(
                &storage,
                Some(cfg),
                &tusk_train::TrainOptions {
                    model_url: url.clone(),
                    ..tusk_train::TrainOptions::default()
                },
                &mut tusk_train::Quiet,
            )
            .expect("train");
            let scorer = Scorer::load(&storage, &url, None).expect("load");
            (dir, scorer)
        })
        .1
}

fn check(scores: Result<Vec<f32>, String>, rows: usize) {
    if let Ok(s) = scores {
        assert_eq!(s.len(), rows);
        assert!(s.iter().all(|p| p.is_nan() || (0.0..=1.0).contains(p)), "{s:?}");
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        // Set up in the fuzzed process (after AFL's fork), where its threads are alive.
        let sc = model();
        let Ok(req) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        // The server refuses more than --max-instances rows before scoring.
        const MAX: usize = 1000;
        if let Ok((r, _)) = tusk_serve::v1_rows(&req)
            && r.len() <= MAX
        {
            let _ = rows::unknown_entities(sc, &r);
            check(rows::score(sc, &r), r.len());
        }
        if let Ok(r) = tusk_serve::v2_rows(&req)
            && r.len() <= MAX
        {
            check(rows::score(sc, &r), r.len());
        }
        if let Ok(out) = recommend::answer(sc, &req, MAX, &[]) {
            assert!(out["items"].is_array());
        }
    });
}
