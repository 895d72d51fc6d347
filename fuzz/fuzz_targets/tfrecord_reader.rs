//! The TFRecord reader on arbitrary bytes: it must return records or an error, never panic,
//! loop forever, or allocate more than the input holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk_records::tfrecord::Reader;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data, "fuzz");
    let mut n = 0usize;
    while let Ok(Some(rec)) = r.next_record() {
        n += rec.len() + 16;
        assert!(n <= data.len());
    }
});
