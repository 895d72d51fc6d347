#!/usr/bin/env python3
"""Print TensorFlow's view of a TFRecord file of tf.train.Example as JSON lines.

    TF_CPP_MIN_LOG_LEVEL=3 /root/.cache/tusk/venv/bin/python testing/tf/read_with_tf.py FILE \
        [--compression NONE|GZIP|ZLIB]

Reads FILE with tf.data.TFRecordDataset(FILE, compression_type=...), parses every
record with tf.train.Example.FromString and prints one JSON object per line in the
`tusk records cat` format (see tfjson.py), so the output can be compared with
tusk's by value (tfjson.canonical).  Without --compression the type is guessed
from the file name: *.gz -> GZIP, *.zz / *.zlib -> ZLIB, otherwise NONE.

Exit status: 0 on success; 1 if TensorFlow fails to read the file (e.g.
DataLossError on a CRC mismatch or truncation; the records before the error
are printed first) or a record is not a valid Example; 2 on usage errors.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfjson  # noqa: E402


def guess_compression(path):
    if path.endswith(".gz"):
        return "GZIP"
    if path.endswith(".zz") or path.endswith(".zlib"):
        return "ZLIB"
    return "NONE"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--compression", choices=["NONE", "GZIP", "ZLIB"], type=str.upper,
                    help="default: from the file name (.gz GZIP, .zz/.zlib ZLIB, else NONE)")
    args = ap.parse_args()
    if not os.path.isfile(args.file):
        print("read_with_tf: %s: no such file" % args.file, file=sys.stderr)
        return 2
    comp = args.compression or guess_compression(args.file)

    import tensorflow as tf
    from google.protobuf.message import DecodeError

    out = sys.stdout
    n = 0
    try:
        for payload in tfjson.read_records_with_tf(args.file, comp):
            try:
                ex = tf.train.Example.FromString(payload)
            except DecodeError as e:
                print("read_with_tf: %s: record %d (%d bytes) is not a valid tf.train.Example: %s"
                      % (args.file, n, len(payload), e), file=sys.stderr)
                return 1
            out.write(tfjson.example_to_json(ex) + "\n")
            n += 1
    except tf.errors.OpError as e:
        out.flush()
        print("read_with_tf: %s: TensorFlow failed after %d record(s) (compression %s): %s: %s"
              % (args.file, n, comp, type(e).__name__, tfjson.clean_tf_message(e.message)), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
