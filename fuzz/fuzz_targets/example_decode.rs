//! The Example decoder and the zero-copy walker on arbitrary bytes: no panics, and they agree
//! (whatever the walker accepts, prost decodes; what decodes re-encodes to JSON and back).

use tusk_records::example;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let walked = example::walk(data, |_, v, n| {
            assert_eq!(v.count(), Ok(n));
            Ok(())
        });
        if let Ok(ex) = example::decode(data) {
            assert!(walked.is_ok());
            let mut s = String::new();
            example::to_json(&ex, &mut s);
            let v: serde_json::Value = serde_json::from_str(&s).expect("to_json emits valid JSON");
            let back = example::from_json(&v).expect("to_json output parses back");
            assert_eq!(
                back.features.map_or(0, |f| f.feature.len()),
                ex.features.map_or(0, |f| f.feature.len())
            );
        }
    });
}
