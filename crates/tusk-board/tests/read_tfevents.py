"""Read TensorBoard run directories with TensorBoard's own EventAccumulator.

Usage: read_tfevents.py RUN_DIR...

Prints one JSON object: {RUN_DIR: {"file_version": ..., "first_records": {FILE:
file_version}, "scalars": {TAG: [[step, "wall_time", "value"], ...]}}}: the format version as the
accumulator parsed it (2.0 for "brain.Event:2"), the `file_version` string of each event file's
first record, and every scalar. Used by crates/tusk-board/tests/tensorboard_reads.rs to check that event files
written by tusk read back in TensorBoard exactly as tusk wrote them.
"""

import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader


def read(run_dir):
    # size_guidance 0 = keep every event (the default samples long series down).
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {}
    for tag in acc.Tags()["scalars"]:
        # Floats as repr() strings: exact, and parsed exactly on the Rust side.
        scalars[tag] = [[e.step, repr(e.wall_time), repr(e.value)] for e in acc.Scalars(tag)]
    first_records = {}
    for name in sorted(os.listdir(run_dir)):
        if "tfevents" in name:
            first = next(iter(EventFileLoader(os.path.join(run_dir, name)).Load()))
            first_records[name] = first.file_version
    return {
        "file_version": acc.file_version,
        "first_records": first_records,
        "scalars": scalars,
    }


def main():
    out = {d: read(d) for d in sys.argv[1:]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
