//! Parsing search spaces, rendering values.

use tusk_tune::space::{Dist, Space, Value};

const SPACE: &str = r#"
"train.learning_rate" = { loguniform = [1e-4, 1e-2] }
"model.embedding_dim" = { choice = [16, 32, 64] }
"model.mlp" = { choice = [[64, 32], [128, 64, 32], "none"] }
x1 = { uniform = [0, 1.5] }
"train.negatives" = { int = [1, 8] }
"#;

#[test]
fn parses_every_distribution_sorted_by_key() {
    let s = Space::parse(SPACE, "space.toml").unwrap();
    let keys: Vec<&str> = s.params.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "model.embedding_dim",
            "model.mlp",
            "train.learning_rate",
            "train.negatives",
            "x1"
        ]
    );
    assert_eq!(
        s.get("train.learning_rate").unwrap().dist,
        Dist::LogUniform { lo: 1e-4, hi: 1e-2 }
    );
    assert_eq!(
        s.get("x1").unwrap().dist,
        Dist::Uniform { lo: 0.0, hi: 1.5 }
    );
    assert_eq!(
        s.get("train.negatives").unwrap().dist,
        Dist::Int { lo: 1, hi: 8 }
    );
    let Dist::Choice(mlp) = &s.get("model.mlp").unwrap().dist else {
        panic!("choice")
    };
    assert_eq!(mlp.len(), 3);
    assert_eq!(
        mlp[0],
        toml::Value::Array(vec![toml::Value::Integer(64), toml::Value::Integer(32)])
    );
}

#[test]
fn round_trips_through_toml_and_has_a_canonical_json() {
    let s = Space::parse(SPACE, "space.toml").unwrap();
    let again = Space::parse(&s.to_toml(), "again.toml").unwrap();
    assert_eq!(s, again);
    assert_eq!(s.to_json(), again.to_json());
    // Written differently (another order, an int bound, a section) → the same JSON.
    let other = Space::parse(
        r#"
x1 = { uniform = [0.0, 1.5] }
"model.mlp" = { choice = [[64, 32], [128, 64, 32], "none"] }
"model.embedding_dim" = { choice = [16, 32, 64] }
[train]
negatives = { int = [1, 8] }
learning_rate = { loguniform = [0.0001, 0.01] }
"#,
        "other.toml",
    )
    .unwrap();
    assert_eq!(s.to_json(), other.to_json());
    assert_eq!(
        s.to_json(),
        serde_json::json!({
            "model.embedding_dim": {"choice": [16, 32, 64]},
            "model.mlp": {"choice": [[64, 32], [128, 64, 32], "none"]},
            "train.learning_rate": {"loguniform": [1e-4, 1e-2]},
            "train.negatives": {"int": [1, 8]},
            "x1": {"uniform": [0.0, 1.5]},
        })
    );
    // A changed range changes the JSON.
    let changed = Space::parse(&SPACE.replace("[1, 8]", "[1, 9]"), "s.toml").unwrap();
    assert_ne!(s.to_json(), changed.to_json());
}

#[test]
fn bad_inputs_name_the_file_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "lr = { logunifrom = [1e-4, 1e-2] }",
            "lr",
            "unknown distribution `logunifrom`",
        ),
        (
            "lr = { uniform = [0, 1], int = [0, 1] }",
            "lr",
            "exactly one distribution",
        ),
        ("lr = {}", "lr", "exactly one distribution"),
        ("\"a.b\" = { uniform = [0, 1, 2] }", "a.b", "2 numbers"),
        ("a = { uniform = [0] }", "a", "2 numbers"),
        ("a = { uniform = 1.0 }", "a", "2 numbers"),
        ("a = { uniform = [\"0\", 1] }", "a", "2 numbers"),
        ("a = { loguniform = [1e-3, nan] }", "a", "finite"),
        ("a = { uniform = [1.0, 1.0] }", "a", "empty range"),
        ("a = { uniform = [2.0, 1.0] }", "a", "empty range"),
        ("a = { loguniform = [1e-2, 1e-4] }", "a", "empty range"),
        ("a = { loguniform = [0, 1] }", "a", "above 0"),
        ("a = { loguniform = [-1, 1] }", "a", "above 0"),
        ("n = { int = [8, 1] }", "n", "empty range"),
        ("n = { int = [1.0, 8] }", "n", "2 integers"),
        ("n = { int = [1, 2, 3] }", "n", "2 integers"),
        ("c = { choice = [] }", "c", "empty"),
        ("c = { choice = 3 }", "c", "list"),
        ("c = 3", "c", "distribution table"),
        (
            "[model]\ndim = { int = [1, 2] }\nwidth = 3",
            "model.width",
            "distribution table",
        ),
        (
            "[model]\ndim = [16, 32]",
            "model",
            "unknown distribution `dim`",
        ),
    ];
    for (text, key, what) in cases {
        let e = Space::parse(text, "bad.toml").expect_err(text);
        assert!(e.starts_with("bad.toml: "), "{text}: {e}");
        assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        assert!(e.contains(what), "{text}: {e}");
    }
    let e = Space::parse("# nothing\n", "empty.toml").unwrap_err();
    assert!(e.starts_with("empty.toml: ") && e.contains("empty"), "{e}");
    let e = Space::parse("a = { uniform = [0, 1] ", "broken.toml").unwrap_err();
    assert!(e.starts_with("broken.toml: "), "{e}");
    // A single-valued int range is allowed (a constant).
    assert!(Space::parse("n = { int = [3, 3] }", "s.toml").is_ok());
}

/// What tusk-train's `--set key=value` does with the value.
fn read_back(literal: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {literal}"))
        .unwrap_or_else(|e| panic!("`{literal}` is not a TOML value: {e}"))
        .remove("v")
        .unwrap()
}

#[test]
fn floats_render_to_literals_that_read_back_bit_for_bit() {
    let mut fixed = vec![
        0.0,
        -0.0,
        1.0,
        -1.5,
        0.1,
        1e-4,
        3e-3,
        1e-7,
        1.234_567_890_123_456_7e-300,
        1e16,
        1e21,
        f64::MIN_POSITIVE,
        5e-324,
        f64::MAX,
        f64::MIN,
        std::f64::consts::PI,
    ];
    // Random bit patterns (SplitMix64), finite ones only.
    let mut z: u64 = 42;
    while fixed.len() < 20_000 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let f = f64::from_bits(x ^ (x >> 31));
        if f.is_finite() {
            fixed.push(f);
        }
    }
    for x in fixed {
        let lit = Value(toml::Value::Float(x)).render();
        let toml::Value::Float(back) = read_back(&lit) else {
            panic!("`{lit}` read back as a non-float")
        };
        assert_eq!(back.to_bits(), x.to_bits(), "{x:e} rendered as `{lit}`");
    }
    assert_eq!(Value(toml::Value::Float(1e-3)).render(), "0.001");
    assert_eq!(Value(toml::Value::Float(2.0)).render(), "2.0");
    assert_eq!(Value(toml::Value::Float(f64::INFINITY)).render(), "inf");
    assert!(matches!(read_back("nan"), toml::Value::Float(x) if x.is_nan()));
}

#[test]
fn strings_arrays_and_tables_render_as_toml() {
    let cases = [
        (toml::Value::String("adam".into()), "\"adam\""),
        (
            toml::Value::String("say \"hi\"\\ \n\ttab \u{1} é".into()),
            "\"say \\\"hi\\\"\\\\ \\n\\ttab \\u0001 é\"",
        ),
        (toml::Value::Integer(i64::MIN), "-9223372036854775808"),
        (toml::Value::Boolean(true), "true"),
        (
            toml::Value::Array(vec![toml::Value::Integer(64), toml::Value::Integer(32)]),
            "[64, 32]",
        ),
        (
            toml::Value::Array(vec![
                toml::Value::Array(vec![toml::Value::Float(0.5)]),
                toml::Value::String("x".into()),
            ]),
            "[[0.5], \"x\"]",
        ),
        (toml::Value::Array(vec![]), "[]"),
    ];
    for (v, want) in cases {
        let lit = Value(v.clone()).render();
        assert_eq!(lit, want);
        assert_eq!(read_back(&lit), v, "{lit}");
    }
    let table: toml::Table =
        toml::from_str("a = 1\n\"odd key\" = [true]\nnested = { b = \"c\" }").unwrap();
    let v = toml::Value::Table(table);
    let lit = Value(v.clone()).render();
    assert_eq!(read_back(&lit), v, "{lit}");
}

#[test]
fn values_round_trip_through_json() {
    let table: toml::Table = toml::from_str("a = 1\nb = [1.5, \"x\"]").unwrap();
    for v in [
        toml::Value::Integer(3),
        toml::Value::Integer(-7),
        toml::Value::Float(3.0),
        toml::Value::Float(1e-4),
        toml::Value::Float(0.1 + 0.2),
        toml::Value::Float(-1.234_567_890_123_456_7e-300),
        toml::Value::String("adam \"w\"".into()),
        toml::Value::Boolean(false),
        toml::Value::Array(vec![toml::Value::Integer(64), toml::Value::Float(32.0)]),
        toml::Value::Table(table),
    ] {
        let value = Value(v);
        let json = serde_json::to_string(&value).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, value, "{json}");
        if let toml::Value::Float(x) = value.0 {
            let toml::Value::Float(y) = back.0 else {
                panic!("{json} came back as a non-float")
            };
            assert_eq!(x.to_bits(), y.to_bits());
        }
    }
    assert_eq!(
        serde_json::to_string(&Value(toml::Value::Integer(3))).unwrap(),
        "3"
    );
    assert_eq!(
        serde_json::to_string(&Value(toml::Value::Float(3.0))).unwrap(),
        "3.0"
    );
}
