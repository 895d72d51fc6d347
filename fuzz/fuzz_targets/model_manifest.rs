//! Loading a model version whose `MANIFEST.json` is arbitrary bytes (a real version otherwise,
//! in `memory://` storage): the load returns the version or an error naming what is wrong,
//! never panics. Also the version's entity-table file on arbitrary bytes.

use std::sync::OnceLock;

use tusk_train::ModelStore;

const MODEL: &str = "memory://fuzz/model";

fn store() -> &'static (tusk_storage::Storage, ModelStore, u64) {
    static STORE: OnceLock<(tusk_storage::Storage, ModelStore, u64)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut train = String::from("user_id,item_id,label\n");
        for i in 0..100u64 {
            train.push_str(&format!("{},{},{}\n", i % 13, i % 7, i % 2));
        }
        std::fs::write(dir.path().join("train.csv"), train).expect("write");
        let text = format!(
            "[data]\ntrain = \"{}/train.csv\"\n[features]\nsparse = [\"user_id\", \"item_id\"]\n\
             label = \"label\"\n[model]\nkind = \"neumf\"\nuser = [\"user_id\"]\n\
             item = [\"item_id\"]\ngmf_dim = 4\nmlp_dim = 4\nlayers = [8]\n[train]\nepochs = 1\n",
            dir.path().display()
        );
        let cfg = tusk_train::Config::parse("fuzz.toml", &text, &[]).expect("config");
        let storage = tusk_storage::Storage::new().expect("storage");
        tusk_train::train(
            &storage,
            Some(cfg),
            &tusk_train::TrainOptions {
                model_url: MODEL.into(),
                ..tusk_train::TrainOptions::default()
            },
            &mut tusk_train::Quiet,
        )
        .expect("train");
        let store = ModelStore::open(&storage, MODEL).expect("open");
        let v = store.latest().expect("list").expect("a version");
        (storage, store, v)
    })
}

fn main() {
    // `scripts/fuzz` seeds the corpus with the real manifest of this target's model (the other
    // files are byte-identical from run to run, so their sizes and CRCs stay valid).
    if std::env::var_os("TUSK_FUZZ_PRINT_MANIFEST").is_some() {
        let (storage, _, v) = store();
        let m = storage
            .open(&format!("{MODEL}/versions/{v:06}/MANIFEST.json"))
            .and_then(|l| l.read())
            .expect("read the manifest");
        std::io::Write::write_all(&mut std::io::stdout(), &m).expect("stdout");
        return;
    }
    afl::fuzz!(|data: &[u8]| {
        // Set up in the fuzzed process (after AFL's fork), where its threads are alive.
        let (storage, store, v) = store();
        let manifest = storage
            .open(&format!("{MODEL}/versions/{v:06}/MANIFEST.json"))
            .expect("url");
        manifest.write(data.to_vec()).expect("memory write");
        let _ = store.manifest(*v);
        let _ = store.load(Some(*v));
        let _ = tusk_data::Entities::from_records(data, "fuzz/entities.tfrecord");
    });
}
