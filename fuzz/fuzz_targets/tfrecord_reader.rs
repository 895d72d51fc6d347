//! The TFRecord reader on arbitrary bytes: it must return records or an error, never panic,
//! loop forever, or allocate more than the input holds.

use tusk_records::tfrecord::Reader;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let mut r = Reader::new(data, "fuzz");
        let mut n = 0usize;
        while let Ok(Some(rec)) = r.next_record() {
            n += rec.len() + 16;
            assert!(n <= data.len());
        }
    });
}
