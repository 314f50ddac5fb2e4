"""Goldens and fixtures for PromptTune's long-tailed datasets (`Sources/Datasets/Readers/LongTailed*.swift`,
`CIFAR100LT.swift`, `Sources/Datasets/Sampling/NumpyRandom.swift`).

What it makes (under Goldens/longtailed/):
  numpy_random.json   numpy's legacy `np.random.RandomState` (what `np.random.seed` / `np.random.shuffle`
                      use): for several seeds, the first 8 words of the MT19937 key after seeding, then
                      on one generator `shuffle(np.arange(n))` for n in SHUFFLE_LENGTHS (full lists up to
                      64 items, {"len", "head", "fnv"} digests beyond), then 4 more `shuffle`s of
                      arange(3) to check the state carried over.
  cifar100_lt.json    LIFT's CIFAR-100-LT rule (`datasets/cifar100.py` of shijxcs/LIFT, copied below):
                      the counts n_k = int(img_max * IF ** (k / 99)) for IF 0.01 / 0.02 / 0.1 and the
                      positions kept from a stand-in CIFAR-100 train label list (label of position i =
                      (7 * i) % 100: 500 images per class in an interleaved order, like the real file's)
                      after np.random.seed(0): head and FNV-1a digest of the kept positions per IF.
  cifar-100-python/{train,test,meta}.gz
                      A small CIFAR-100-style dataset in the real file format, gzip-compressed for the
                      repository (the tests gunzip them; the files users have are not compressed):
                      pickles as CIFAR ships them (pickle protocol 2 written by Python 2: `str` keys and
                      byte strings as BINSTRING / SHORT_BINSTRING, so Python 3 reads them with
                      encoding='bytes'; `data` a numpy uint8 array through numpy.core.multiarray._reconstruct),
                      with 10 classes (FIXTURE_NAMES), 100 train images per class in the interleaved order
                      (7 * i) % 10 and 3 test images per class; pixel j of image i of a split is
                      (i * 31 + j * 7 + split offset) % 256.
  cifar_fixture.json  What the fixture holds and the positions LIFT's rule keeps from its train file for
                      IF 0.01 / 0.02 / 0.1 with cls_num = 10 (the reader takes the class count from
                      meta's fine_label_names; with the real 100 classes that is LIFT's cls_num = 100).

Rerun from the repository root with a Python that has numpy (any numpy >= 1.17; made with 2.4):
    python3 reference/make_lt_fixtures.py
"""
import gzip
import io
import json
import os
import pickle
import struct

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Goldens", "longtailed")

SEEDS = [0, 1, 12345, 2**32 - 1]
SHUFFLE_LENGTHS = [1, 2, 3, 5, 10, 17, 64, 500, 1000, 70001]
FIXTURE_NAMES = ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle"]
FACTORS = [0.01, 0.02, 0.1]


def fnv(xs):
    h = 0xCBF29CE484222325
    for x in xs:
        for b in (int(x) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return format(h, "016x")


def encode(xs):
    xs = [int(x) for x in xs]
    return xs if len(xs) <= 64 else {"len": len(xs), "head": xs[:16], "fnv": fnv(xs)}


def numpy_random():
    out = []
    for seed in SEEDS:
        rs = np.random.RandomState(seed)
        key = [int(k) for k in rs.get_state()[1][:8]]
        shuffles = []
        for n in SHUFFLE_LENGTHS + [3, 3, 3, 3]:
            a = np.arange(n)
            rs.shuffle(a)
            shuffles.append({"n": n, "result": encode(a)})
        out.append({"seed": seed, "key": key, "shuffles": shuffles})
    return out


# LIFT's rule, as datasets/cifar100.py of shijxcs/LIFT (IMBALANCECIFAR100), on labels alone.
def lift_counts(n_data, cls_num, imb_factor):
    img_max = n_data / cls_num
    return [int(img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))) for cls_idx in range(cls_num)]


def lift_keep(targets, cls_num, imb_factor, rand_number=0):
    np.random.seed(rand_number)
    img_num_list = lift_counts(len(targets), cls_num, imb_factor)
    targets_np = np.array(targets, dtype=np.int64)
    classes = np.unique(targets_np)
    kept = []
    for the_class, the_img_num in zip(classes, img_num_list):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        kept.extend(int(i) for i in idx[:the_img_num])
    return img_num_list, kept


def cifar100_lt():
    targets = [(7 * i) % 100 for i in range(50000)]
    out = []
    for f in FACTORS:
        counts, kept = lift_keep(targets, 100, f)
        out.append({"factor": f, "counts": counts, "kept": encode(kept)})
    return {"labels": "(7 * i) % 100 for i in 0..<50000", "cases": out}


class Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote with protocol 2: str and bytes as byte strings
    (SHORT_BINSTRING / BINSTRING) and numpy's classes under their old module names."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_byte_string(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_byte_string
    dispatch[bytes] = save_byte_string

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None)
        name = name or obj.__qualname__
        if module is not None and module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
        if module == "builtins":
            module = "__builtin__"
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)


def py2_pickle(obj):
    buf = io.BytesIO()
    Python2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_gz(path, raw):
    with open(path, "wb") as f:
        # mtime=0: the same bytes on every run.
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as g:
            g.write(raw)


def cifar_fixture():
    n_classes, per_train, per_test = len(FIXTURE_NAMES), 100, 3
    folder = os.path.join(OUT, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    splits = {}
    for split, count, offset in [("train", per_train, 0), ("test", per_test, 101)]:
        n = n_classes * count
        labels = [(7 * i) % n_classes for i in range(n)]
        j = np.arange(3072)
        data = np.stack([((i * 31 + j * 7 + offset) % 256).astype(np.uint8) for i in range(n)])
        d = {
            "filenames": ["%s_s_%06d.png" % (FIXTURE_NAMES[y], i) for i, y in enumerate(labels)],
            "batch_label": "%s batch 1 of 1" % ("training" if split == "train" else "testing"),
            "fine_labels": labels,
            "coarse_labels": [y // 2 for y in labels],
            "data": data,
        }
        raw = py2_pickle(d)
        back = pickle.loads(raw, encoding="bytes")
        assert back[b"fine_labels"] == labels and (back[b"data"] == data).all()
        write_gz(os.path.join(folder, split + ".gz"), raw)
        splits[split] = labels
    meta = {"fine_label_names": FIXTURE_NAMES, "coarse_label_names": ["c%d" % k for k in range(5)]}
    raw = py2_pickle(meta)
    assert pickle.loads(raw, encoding="bytes")[b"fine_label_names"] == [s.encode() for s in FIXTURE_NAMES]
    write_gz(os.path.join(folder, "meta.gz"), raw)
    cases = []
    for f in FACTORS:
        counts, kept = lift_keep(splits["train"], n_classes, f)
        cases.append({"factor": f, "counts": counts, "kept": kept})
    return {"classes": FIXTURE_NAMES, "train_labels": splits["train"], "test_labels": splits["test"],
            "pixel_rule": "(i * 31 + j * 7 + offset) % 256, offset 0 train, 101 test", "cases": cases}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, value in [("numpy_random.json", numpy_random()), ("cifar100_lt.json", cifar100_lt()),
                        ("cifar_fixture.json", cifar_fixture())]:
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(value, f, separators=(",", ":"))
            f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
