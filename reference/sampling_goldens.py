"""Goldens for PromptTune's few-shot sampling (`Sources/Datasets/Sampling`).

What it makes (all under Goldens/sampling/, compact JSON; lists longer than 64 are stored as
{"len", "head" (first 16), "fnv"} (fewshot.json: {"len", "fnv"}), where "fnv" is FNV-1a 64 over each value as 8 little-endian
bytes, hex):
  random.json     CPython `random.Random` outputs for several seeds (0, small, negative, 2**32-ish,
                  a three-word 2**70 + 3): one fixed call script per seed, run on one generator so
                  that the state carried between calls is checked too: getrandbits(32) x 20,
                  getrandbits(k) for k in 0..128 (as little-endian 32-bit words), random() (as the
                  exact integer random() * 2**53), _randbelow(n) for n from 1 to 2**62 + 1,
                  sample(range(n), k) for n in {5, 21, 22, 30, 85, 86, 100, 1000, 3000} with k across both branches
                  of CPython's algorithm (pool list / selected set) and their boundaries,
                  shuffle, choice, choices(range(n), k=12), then getrandbits(32) x 3.
  fewshot.json    Synthetic label lists (train and val; shuffled, grouped with classes in non-sorted
                  order, classes with fewer than 16 items or absent from val, non-contiguous labels)
                  and the positions Dassl's `generate_fewshot_dataset` (a faithful copy below, run on
                  the module-level `random` as Dassl does) picks for seeds 1..50 and shots 1, 2, 4,
                  8, 16 the way CoOp's dataset classes call it: `random.seed(seed)`, then train with
                  K shots, then val with min(K, 4). Full lists for seeds 1..3, digests otherwise.
                  Plus `repeat=True` cases (random.choices for classes with fewer than K items; full
                  lists for seed 1).
  imbalance.json  Shot counts n_k = max(1, floor(16 * tau ** (k / (K - 1)))) (K = 1 -> [16]) for
                  several K and tau (K = 1000 as a digest), and the profile applied to seeded 16-shot draws
                  ("positions" index into "draw").
  subsample.json  CoOp's `subsample_classes` (base / new) applied to seeded few-shot lists.
  coop_cache/     CoOp-style few-shot pickles written with a stand-in `Datum` class registered as
                  `dassl.data.datasets.base_dataset.Datum` (attributes _impath, _label, _domain,
                  _classname; protocol HIGHEST, as CoOp), `cache.json` with the image root and what
                  each file contains (relative path, label, class name), and malformed files
                  (`bad_*.pkl`) for the error tests.
  coop_cache/imagenet/  A tiny ImageNet tree in CoOp's layout (`layout.json`: classnames.txt lines,
                  train/val file names per class in a stand-in `os.listdir` order) and CoOp's cached
                  draw on it, `shot_2-seed_1.pkl` (CoOp's `ImageNet.read_data` + Dassl's
                  `generate_fewshot_dataset` after `random.seed(1)`, train only), with the draw on
                  sorted listings (PromptTune's order) for comparison.

Rerun (from the repository root; needs only the standard library, CPython 3.11):
    python3 reference/sampling_goldens.py
"""
import json
import math
import os
import pickle
import random
import sys
import types
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Goldens", "sampling")

# ---------------------------------------------------------------------------------------------
# Encoding helpers


def fnv(xs):
    h = 0xCBF29CE484222325
    for x in xs:
        for b in (x & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return format(h, "016x")


def enc(xs, full=False, head=True):
    xs = list(xs)
    if full or len(xs) <= 64:
        return xs
    if not head:
        return {"len": len(xs), "fnv": fnv(xs)}
    return {"len": len(xs), "head": xs[:16], "fnv": fnv(xs)}


def words(x, k=None):
    """Little-endian 32-bit words of a non-negative int (k bits -> (k + 31) // 32 words)."""
    n = (k + 31) // 32 if k is not None else max(1, (x.bit_length() + 31) // 32)
    return [(x >> (32 * i)) & 0xFFFFFFFF for i in range(n)]


def dump(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


# ---------------------------------------------------------------------------------------------
# (a) random.Random

GETRANDBITS_KS = [0, 1, 7, 31, 32, 33, 63, 64, 65, 100, 128]
RANDBELOW_NS = [1, 2, 3, 5, 7, 10, 16, 17, 100, 1000, 2**31 - 1, 2**31, 2**32 + 1, 10**12, 2**62 + 1]
SAMPLE_KS = {
    5: [0, 1, 2, 3, 4, 5],
    21: [5, 21],  # n == setsize (21 for k <= 5): pool; n = 22: set
    22: [5],
    30: [0, 1, 2, 5, 6, 10, 29, 30],
    85: [6, 21],  # n == setsize (85 for 6 <= k <= 21): pool; n = 86: set
    86: [6],
    100: [0, 1, 5, 6, 7, 21, 22, 50, 99, 100],
    1000: [0, 1, 5, 6, 85, 86, 100, 341, 342, 999, 1000],
    3000: [0, 1, 5, 6, 100, 341, 342, 1000, 3000],
}
CHOICES_NS = [1, 3, 10, 1000]
SEEDS = [0, 1, 2, 3, 42, 1234567, -5, 2**32, 2**32 + 5, 2**63 - 1, 2**70 + 3]


def random_script(seed):
    rng = random.Random(seed)
    out = {"seed_words": words(abs(seed))}
    if -(2**63) <= seed < 2**63:
        out["seed"] = seed
    out["getrandbits32"] = [rng.getrandbits(32) for _ in range(20)]
    out["getrandbits"] = [{"k": k, "words": [words(rng.getrandbits(k), k) for _ in range(3)]} for k in GETRANDBITS_KS]
    rs = [rng.random() for _ in range(10)]
    assert all((r * 2**53).is_integer() for r in rs)
    out["random53"] = [int(r * 2**53) for r in rs]
    out["randbelow"] = [{"n": n, "values": [rng._randbelow(n) for _ in range(5)]} for n in RANDBELOW_NS]
    out["sample"] = [{"n": n, "k": k, "result": enc(rng.sample(range(n), k))}
                     for n, ks in SAMPLE_KS.items() for k in ks]
    xs = list(range(20))
    rng.shuffle(xs)
    out["shuffle20"] = xs
    out["choice7"] = [rng.choice(range(7)) for _ in range(5)]
    out["choices"] = [{"n": n, "k": 12, "result": rng.choices(range(n), k=12)} for n in CHOICES_NS]
    out["final32"] = [rng.getrandbits(32) for _ in range(3)]
    return out


def make_random():
    seeds = [random_script(s) for s in SEEDS]
    # Sanity: the module-level generator is the same algorithm.
    random.seed(1)
    assert random.getrandbits(32) == seeds[1]["getrandbits32"][0]
    dump("random.json", {"python": sys.version.split()[0], "getrandbits_ks": GETRANDBITS_KS,
                         "randbelow_ns": RANDBELOW_NS, "choices_ns": CHOICES_NS, "seeds": seeds})


# ---------------------------------------------------------------------------------------------
# (b) Dassl's few-shot sampling (faithful copy of DatasetBase.generate_fewshot_dataset and
# split_dataset_by_label, KaiyangZhou/Dassl.pytorch dassl/data/datasets/base_dataset.py)


class Item:
    """Stands in for Datum: a position into the synthetic list and a label."""

    def __init__(self, index, label):
        self.index = index
        self.label = label


def split_dataset_by_label(data_source):
    output = defaultdict(list)
    for item in data_source:
        output[item.label].append(item)
    return output


def generate_fewshot_dataset(*data_sources, num_shots=-1, repeat=False):
    if num_shots < 1:
        if len(data_sources) == 1:
            return data_sources[0]
        return data_sources
    output = []
    for data_source in data_sources:
        tracker = split_dataset_by_label(data_source)
        dataset = []
        for label, items in tracker.items():
            if len(items) >= num_shots:
                sampled_items = random.sample(items, num_shots)
            else:
                if repeat:
                    sampled_items = random.choices(items, k=num_shots)
                else:
                    sampled_items = items
            dataset.extend(sampled_items)
        output.append(dataset)
    if len(output) == 1:
        return output[0]
    return output


def coop_fewshot(train, val, shots, seed, repeat=False, sample_val=True):
    """What CoOp's dataset classes do (set_random_seed once, then train, then val)."""
    random.seed(seed)
    tr = generate_fewshot_dataset(train, num_shots=shots, repeat=repeat)
    va = generate_fewshot_dataset(val, num_shots=min(shots, 4), repeat=repeat) if sample_val else val
    return tr, va


def items(labels):
    return [Item(i, y) for i, y in enumerate(labels)]


def synthetic_datasets():
    g = random.Random(20240601)  # a private generator; the module-level one is for sampling
    sets = {}

    # 10 classes, 3..40 train items each, 1..8 val items, both shuffled.
    tr = [c for c in range(10) for _ in range(g.randint(3, 40))]
    va = [c for c in range(10) for _ in range(g.randint(1, 8))]
    g.shuffle(tr)
    g.shuffle(va)
    sets["c10_shuffled"] = (tr, va)

    # 37 classes grouped by class, classes in a non-sorted order, 20..40 train, 5..10 val.
    order = list(range(37))
    g.shuffle(order)
    tr = [c for c in order for _ in range(g.randint(20, 40))]
    va = [c for c in order for _ in range(g.randint(5, 10))]
    sets["c37_grouped_permuted"] = (tr, va)

    # 102 classes, about a fifth with fewer than 16 train items, some absent from val; shuffled.
    tr, va = [], []
    for c in range(102):
        tr += [c] * (g.randint(1, 15) if g.random() < 0.2 else g.randint(16, 40))
        va += [c] * g.randint(0, 6)
    g.shuffle(tr)
    g.shuffle(va)
    sets["c102_some_small"] = (tr, va)

    # 5 non-contiguous labels, interleaved, first appearance not in sorted order.
    labs = [42, 3, 17, 8, 0]
    tr = [y for y, n in zip(labs, [7, 30, 2, 16, 15]) for _ in range(n)]
    va = [y for y, n in zip(labs, [4, 1, 3, 6, 2]) for _ in range(n)]
    g.shuffle(tr)
    g.shuffle(va)
    sets["gap5_interleaved"] = (tr, va)
    return sets


FEWSHOT_SEEDS = list(range(1, 51))
FEWSHOT_SHOTS = [1, 2, 4, 8, 16]


def make_fewshot(datasets):
    out = {"seeds": FEWSHOT_SEEDS, "shots": FEWSHOT_SHOTS, "datasets": [], "repeat_cases": []}
    for name, (tr_labels, va_labels) in datasets.items():
        tr, va = items(tr_labels), items(va_labels)
        cases = []
        for seed in FEWSHOT_SEEDS:
            for shots in FEWSHOT_SHOTS:
                ftr, fva = coop_fewshot(tr, va, shots, seed)
                full = seed <= 3
                cases.append({"seed": seed, "shots": shots,
                              "train": enc([x.index for x in ftr], full, head=False),
                              "val": enc([x.index for x in fva], full, head=False)})
        out["datasets"].append({"name": name, "train_labels": tr_labels, "val_labels": va_labels, "cases": cases})
        if name in ("c10_shuffled", "c102_some_small", "gap5_interleaved"):
            for seed in range(1, 6):
                for shots in (4, 8, 16):
                    ftr, fva = coop_fewshot(tr, va, shots, seed, repeat=True)
                    full = seed == 1
                    out["repeat_cases"].append({"dataset": name, "seed": seed, "shots": shots,
                                                "train": enc([x.index for x in ftr], full, head=False),
                                                "val": enc([x.index for x in fva], full, head=False)})
    dump("fewshot.json", out)


# ---------------------------------------------------------------------------------------------
# Imbalance profile and CoOp's subsample_classes


def imbalance_counts(K, tau, head=16):
    if K == 1:
        return [head]
    return [max(1, math.floor(head * tau ** (k / (K - 1)))) for k in range(K)]


def imbalanced(labels, tau, head=16):
    sorted_labels = sorted(set(labels))
    counts = imbalance_counts(len(sorted_labels), tau, head)
    quota = {y: counts[k] for k, y in enumerate(sorted_labels)}
    out = []
    for i, y in enumerate(labels):
        if quota[y] > 0:
            out.append(i)
            quota[y] -= 1
    return out


def make_imbalance(datasets):
    taus = [1.0, 0.5, 0.25, 0.1, 0.06, 0.01]
    counts = [{"K": K, "tau": tau, "counts": enc(imbalance_counts(K, tau), full=K <= 102)}
              for K in [1, 2, 3, 10, 37, 100, 102, 1000] for tau in taus]
    applied = []
    for name in ("c102_some_small", "gap5_interleaved"):
        tr_labels, va_labels = datasets[name]
        ftr, _ = coop_fewshot(items(tr_labels), items(va_labels), 16, 1)
        draw_labels = [x.label for x in ftr]
        applied.append({"dataset": name, "seed": 1, "shots": 16, "draw": [x.index for x in ftr],
                        "kept": [{"tau": tau, "positions": imbalanced(draw_labels, tau)} for tau in (1.0, 0.25, 0.06)]})
    dump("imbalance.json", {"taus": taus, "counts": counts, "applied": applied})


def subsample_classes(*args, subsample="all"):
    """CoOp datasets/oxford_pets.py OxfordPets.subsample_classes, on Item lists."""
    assert subsample in ["all", "base", "new"]
    if subsample == "all":
        return args
    dataset = args[0]
    labels = set()
    for item in dataset:
        labels.add(item.label)
    labels = list(labels)
    labels.sort()
    n = len(labels)
    m = math.ceil(n / 2)
    if subsample == "base":
        selected = labels[:m]
    else:
        selected = labels[m:]
    relabeler = {y: y_new for y_new, y in enumerate(selected)}
    output = []
    for dataset in args:
        dataset_new = []
        for item in dataset:
            if item.label not in selected:
                continue
            dataset_new.append(Item(item.index, relabeler[item.label]))
        output.append(dataset_new)
    return output


def make_subsample(datasets):
    cases = []
    for name in ("c37_grouped_permuted", "gap5_interleaved", "c10_shuffled"):
        tr_labels, va_labels = datasets[name]
        ftr, fva = coop_fewshot(items(tr_labels), items(va_labels), 4, 2)
        for subsample in ("base", "new"):
            otr, ova = subsample_classes(ftr, fva, subsample=subsample)
            cases.append({"dataset": name, "seed": 2, "shots": 4, "subsample": subsample,
                          "train_in": [x.index for x in ftr], "val_in": [x.index for x in fva],
                          "train": [[x.index, x.label] for x in otr], "val": [[x.index, x.label] for x in ova]})
    dump("subsample.json", {"cases": cases})


# ---------------------------------------------------------------------------------------------
# (c) CoOp-style cached pickles


def register_dassl_datum():
    """A stand-in for dassl.data.datasets.base_dataset.Datum, importable under Dassl's module path."""
    names = ["dassl", "dassl.data", "dassl.data.datasets", "dassl.data.datasets.base_dataset"]
    for n in names:
        sys.modules.setdefault(n, types.ModuleType(n))
    mod = sys.modules["dassl.data.datasets.base_dataset"]

    class Datum:
        def __init__(self, impath="", label=0, domain=0, classname=""):
            assert isinstance(impath, str)
            self._impath = impath
            self._label = label
            self._domain = domain
            self._classname = classname

        impath = property(lambda self: self._impath)
        label = property(lambda self: self._label)
        domain = property(lambda self: self._domain)
        classname = property(lambda self: self._classname)

    Datum.__module__ = "dassl.data.datasets.base_dataset"
    Datum.__qualname__ = "Datum"
    mod.Datum = Datum
    return Datum


IMAGE_ROOT = "/data/coop/oxford_pets/images"


def make_cache(datasets):
    Datum = register_dassl_datum()
    d = os.path.join(OUT, "coop_cache")
    os.makedirs(d, exist_ok=True)
    tr_labels, va_labels = datasets["c37_grouped_permuted"]
    names = {c: (f"breed {c:02d}" if c != 5 else "café au lait") for c in range(37)}

    def datums(labels, split):
        return [Datum(impath=f"{IMAGE_ROOT}/{names[y].replace(' ', '_')}/{split}_{i:04d}.jpg", label=y,
                      classname=names[y]) for i, y in enumerate(labels)]

    train_all, val_all = datums(tr_labels, "tr"), datums(va_labels, "va")
    expected = {"image_root": IMAGE_ROOT, "dataset": "c37_grouped_permuted", "class_names": [names[c] for c in range(37)],
                "files": []}

    def rel(x):
        return [x._impath[len(IMAGE_ROOT) + 1:], x._label, x._classname]

    for shots, seed in ((2, 1), (8, 3)):
        random.seed(seed)
        train = generate_fewshot_dataset(train_all, num_shots=shots)
        val = generate_fewshot_dataset(val_all, num_shots=min(shots, 4))
        fname = f"shot_{shots}-seed_{seed}.pkl"
        with open(os.path.join(d, fname), "wb") as f:
            pickle.dump({"train": train, "val": val}, f, protocol=pickle.HIGHEST_PROTOCOL)
        expected["files"].append({"file": fname, "shots": shots, "seed": seed,
                                  "train": [rel(x) for x in train], "val": [rel(x) for x in val]})
    # ImageNet's files hold only "train".
    random.seed(1)
    train = generate_fewshot_dataset(train_all, num_shots=1)
    with open(os.path.join(d, "imagenet_shot_1-seed_1.pkl"), "wb") as f:
        pickle.dump({"train": train}, f, protocol=pickle.HIGHEST_PROTOCOL)
    expected["files"].append({"file": "imagenet_shot_1-seed_1.pkl", "shots": 1, "seed": 1,
                              "train": [rel(x) for x in train], "val": None})

    # Malformed files for the error tests: name -> what the reader must mention.
    good = Datum(impath=f"{IMAGE_ROOT}/a/b.jpg", label=1, classname="a")
    no_label = Datum(impath=f"{IMAGE_ROOT}/a/c.jpg", label=1, classname="a")
    del no_label._label
    str_label = Datum(impath=f"{IMAGE_ROOT}/a/d.jpg", label="1", classname="a")
    outside = Datum(impath="/elsewhere/a/e.jpg", label=1, classname="a")
    bad = {
        "bad_toplevel_list.pkl": ([good], "list"),
        "bad_missing_train.pkl": ({"val": [good]}, "train"),
        "bad_extra_key.pkl": ({"train": [good], "val": [], "test": []}, "test"),
        "bad_not_datum.pkl": ({"train": [good, ("x.jpg", 1, "a")], "val": []}, "train[1]"),
        "bad_no_label.pkl": ({"train": [good], "val": [good, no_label]}, "_label"),
        "bad_label_str.pkl": ({"train": [str_label], "val": []}, "_label"),
        "bad_outside_root.pkl": ({"train": [good, outside], "val": []}, "/elsewhere/a/e.jpg"),
        "bad_train_dict.pkl": ({"train": {"a": good}, "val": []}, "train"),
    }
    expected["bad"] = []
    for fname, (obj, mention) in bad.items():
        with open(os.path.join(d, fname), "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        expected["bad"].append({"file": fname, "mentions": mention})
    raw = pickle.dumps({"train": train_all[:5], "val": []}, protocol=pickle.HIGHEST_PROTOCOL)
    with open(os.path.join(d, "bad_truncated.pkl"), "wb") as f:
        f.write(raw[: len(raw) // 2])
    expected["bad"].append({"file": "bad_truncated.pkl", "mentions": "pickle"})
    dump(os.path.join("coop_cache", "cache.json"), expected)


IMAGENET_ROOT = "/data/coop/imagenet/images"


def make_imagenet_cache():
    """CoOp's ImageNet few-shot cache on a tiny tree whose files are listed in a non-sorted order."""
    Datum = register_dassl_datum()
    d = os.path.join(OUT, "coop_cache", "imagenet")
    os.makedirs(d, exist_ok=True)
    names = ["tench", "goldfish", "great white shark", "tiger shark", "caf\u00e9 au lait"]
    wnids = [f"n0{k + 1}000000" for k in range(len(names))]
    train_files, val_files = {}, {}
    for k, w in enumerate(wnids):
        files = [f"{w}_{j:04d}.JPEG" for j in range(6 + k % 2)]
        random.Random(100 + k).shuffle(files)  # stands in for os.listdir order
        train_files[w] = files
        val_files[w] = [f"ILSVRC2012_val_{k:03d}{j}.JPEG" for j in range(2)]

    def read_data(order):
        items = []
        for label, w in enumerate(sorted(wnids)):
            for f in order(train_files[w]):
                items.append(Datum(impath=f"{IMAGENET_ROOT}/train/{w}/{f}", label=label, classname=names[wnids.index(w)]))
        return items

    def rel(x):
        return [x._impath[len(IMAGENET_ROOT) + 1:], x._label, x._classname]

    shots, seed = 2, 1
    random.seed(seed)
    coop = generate_fewshot_dataset(read_data(list), num_shots=shots)
    random.seed(seed)
    ours = generate_fewshot_dataset(read_data(sorted), num_shots=shots)
    assert [rel(x) for x in coop] != [rel(x) for x in ours], "the listdir order should change the draw"
    with open(os.path.join(d, f"shot_{shots}-seed_{seed}.pkl"), "wb") as f:
        pickle.dump({"train": coop}, f, protocol=pickle.HIGHEST_PROTOCOL)
    dump(os.path.join("coop_cache", "imagenet", "layout.json"), {
        "image_root": IMAGENET_ROOT, "classnames": [[w, names[k]] for k, w in enumerate(wnids)],
        "train": train_files, "val": val_files, "shots": shots, "seed": seed, "file": f"shot_{shots}-seed_{seed}.pkl",
        "coop_train": [rel(x) for x in coop], "sorted_train": [rel(x) for x in ours]})


def main():
    os.makedirs(OUT, exist_ok=True)
    make_random()
    datasets = synthetic_datasets()
    make_fewshot(datasets)
    make_imbalance(datasets)
    make_subsample(datasets)
    make_cache(datasets)
    make_imagenet_cache()


if __name__ == "__main__":
    main()
