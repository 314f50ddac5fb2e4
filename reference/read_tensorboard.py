"""Reads TensorBoard event files with tensorboard's own reader and prints their scalars as JSON.

    python3 reference/read_tensorboard.py DIR

Prints {"<run>": {"<tag>": [[step, value], ...]}} for DIR and every folder under it that holds
`events.out.tfevents.*` files (run "." is DIR itself), read by
tensorboard.backend.event_processing.event_accumulator.EventAccumulator with every scalar kept
(size_guidance 0) and TensorBoard's default purge of orphaned steps (SessionLog.START). Used by
PromptTune's tests of `train --tensorboard` and `run --tensorboard` (pip install tensorboard).
"""
import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator


def read_run(path):
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in sorted(acc.Tags()["scalars"])}


def main():
    root = sys.argv[1]
    runs = {}
    for folder, _, files in sorted(os.walk(root)):
        if any(f.startswith("events.out.tfevents.") for f in files):
            runs[os.path.relpath(folder, root)] = read_run(folder)
    json.dump(runs, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
