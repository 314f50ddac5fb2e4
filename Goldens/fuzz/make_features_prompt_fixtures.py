"""Regression fixtures for the features-file and prompt-checkpoint readers (issue 8).

Each file is an input that crashed PromptTune (a Swift trap) before the readers validated it, or
the smallest file that reproduces such a crash. `FeatureFileHardeningTests` and
`PromptCheckpointHardeningTests` read every file here and require a typed error.
Run from the repository root: python3 Goldens/fuzz/make_features_prompt_fixtures.py (standard library only).
"""
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        shape, values = tensors[name]
        data = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


INDEX = {"features": [], "prompt": []}


def features(name, expect, why, labels=(0, 1, 1), shape=(1, 3, 2), values=None, version="1"):
    INDEX["features"].append({"file": name + ".safetensors", "expect": "FileError." + expect, "why": why})
    n = shape[0] * shape[1] * shape[2]
    values = values if values is not None else [float(i % 5) for i in range(n)]
    safetensors(os.path.join(HERE, "features", name + ".safetensors"),
                {"features": (list(shape), values), "labels": ([len(labels)], list(labels))},
                {"format": "prompttune.features", "version": version, "classnames": json.dumps(["a", "b"])})


# K8: labels Int(label) trapped on (the most frequent crash of the campaign).
features("k8-label-nan", "badLabel", "K8: Int(nan) trapped", labels=(0, math.nan, 1))
features("k8-label-inf", "badLabel", "K8: Int(inf) trapped", labels=(0, math.inf, 1))
features("k8-label-minus-inf", "badLabel", "K8: Int(-inf) trapped", labels=(-math.inf, 0, 1))
features("k8-label-huge", "badLabel", "K8: Int(1e30) trapped", labels=(0, 1e30, 1))
features("k8-label-int-max", "badLabel", "K8: Int(9.3e18) trapped", labels=(0, 9.3e18, 1))
# Not traps but wrong numbers: a negative and a fractional label.
features("label-negative", "badLabel", "a negative label indexed out of range", labels=(0, -1, 1))
features("label-fraction", "badLabel", "a fractional label", labels=(0, 0.5, 1))
# K9: zero views (index out of range in the trainer), zero images, zero dimensions.
features("k9-zero-views", "badShape", "K9: zero views indexed out of range in the trainer", shape=(0, 3, 2), values=[])
features("k9-zero-dimension", "badShape", "zero dimensions", shape=(1, 3, 0), values=[])
# Silent: NaN and infinite features gave an accuracy (eval) or "try a lower --lr" (train).
features("features-nan", "nonFinite", "eval printed an accuracy, train blamed the learning rate", values=[0, 1, math.nan, 1, 0, 1])
features("features-inf", "nonFinite", "as features-nan", values=[0, 1, 2, math.inf, 0, 1])


def prompt(name, expect, why, context=None, momentum=True, **changes):
    INDEX["prompt"].append({"file": name + ".ptprompt", "expect": "FileError." + expect, "why": why})
    header = {
        "config": {"method": {"name": "coop", "prompt": {"contextLength": 2, "classSpecific": False, "position": "end"},
                              "terms": [], "handTemplates": {}},
                   "optimizer": {"learningRate": 0.002, "momentum": 0.9, "weightDecay": 0.0005, "warmupEpochs": 1,
                                 "warmupLearningRate": 1e-05},
                   "epochs": 3, "batchSize": 8, "seed": 4, "template": "a photo of a {}."},
        "classNames": ["cat", "dog"], "contextShape": [2, 4], "hasMomentum": momentum, "epochsDone": 1, "steps": 1,
        "rngState": "12345", "modelDigest": "m", "featuresDigest": "f",
        "history": [{"epoch": 0, "learningRate": 1e-05, "loss": 2.5, "terms": {"ce": 2.5}, "accuracy": 0.25}],
    }
    header.update(changes)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    context = context if context is not None else [i / 10 for i in range(8)]
    body = struct.pack("<%df" % len(context), *context) * (2 if momentum else 1)
    with open(os.path.join(HERE, "prompt", name + ".ptprompt"), "wb") as f:
        f.write(b"PTPROMPT" + struct.pack("<I", 1) + struct.pack("<Q", len(text)) + text + body)


# K4: a huge contextShape overflowed 20 + header + 4 * n * 2.
prompt("k4-context-shape-huge", "truncated", "K4: the size arithmetic overflowed", contextShape=[2, 2 ** 62])
prompt("k4-context-shape-wraps", "truncated", "K4: 4 x n x 2 overflowed", contextShape=[2, 2 ** 61])
# K5: steps = Int.max overflowed the step counter after resuming (here with no epoch done).
prompt("k5-steps-int-max", "inconsistent", "K5: the step counter overflowed after resuming", epochsDone=0, history=[], steps=2 ** 63 - 1)
# K6: a negative epochsDone trapped in the progress bar.
prompt("k6-epochs-done-negative", "inconsistent", "K6: the progress bar trapped", epochsDone=-5, history=[])
# K7: epochsDone >= epochs with an empty history trapped on history.last!.
prompt("k7-finished-without-history", "inconsistent", "K7: history.last! trapped", epochsDone=3, steps=3, history=[])
# Silent: a NaN prompt gave an accuracy in eval.
prompt("context-nan", "nonFinite", "eval printed an accuracy for a NaN prompt", context=[0, 0.1, math.nan, 0.3, 0.4, 0.5, 0.6, 0.7])

for folder, entries in INDEX.items():
    about = {"features": "Regression inputs of FeatureSet.read (issue 8), made by make_features_prompt_fixtures.py; FeatureFileHardeningTests.testRegressionFixturesAreTypedErrors reads each and requires the error kind given.",
             "prompt": "Regression inputs of PromptCheckpoint.read (issue 8), made by make_features_prompt_fixtures.py; PromptCheckpointHardeningTests.testRegressionFixturesAreTypedErrors reads each and requires the error kind given."}[folder]
    with open(os.path.join(HERE, folder, "index.json"), "w") as f:
        f.write(json.dumps({"about": about, "fixtures": entries}, indent=1, sort_keys=True) + "\n")
