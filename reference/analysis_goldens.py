"""Goldens for PromptTune's analysis target (`Sources/Analysis`), from numpy alone.

What it makes (under Goldens/analysis/):
  nc.json      Three seeded datasets (inputs stored as float32 values written exactly as doubles):
               "imbalanced" d=8, K=4, N=40 with class sizes 4..16; "balanced" d=16, K=6, N=60;
               "wide" d=5, K=7, N=35 (K > d, so the class means span all of R^d and S_B has rank d).
               For each: images (N x d), labels, text (K x d) and every measure of METHODS.md section 6,
               computed straight from the definitions: S_W and S_B as d x d matrices and
               numpy's pseudo-inverse (hermitian, rcond 1e-10 relative to the largest eigenvalue;
               the Swift code works in the K x K Gram instead), population standard deviations.
  logreg.json  sklearn's multinomial logistic regression objective, C * sum_i CE_i + 0.5 ||W||_F^2
               (bias unpenalised), minimised by Newton's method (minimum-norm steps, so the biases keep
               summing to zero) on a small seeded dataset (d=5, K=3, N=30) for C in {0.1, 1, 100}:
               the optimum weights W (K x d), biases (centred), objective value and training predictions.

Rerun (from the repository root; numpy only):
    python3 reference/analysis_goldens.py
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Goldens", "analysis")
PINV_RCOND = 1e-10


def f32list(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def normalise(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def geometry(v):
    """NC2 measures of K centred class vectors (rows of v)."""
    k = v.shape[0]
    norms = np.linalg.norm(v, axis=1)
    equinorm = norms.std() / norms.mean()
    unit = v / np.maximum(norms[:, None], 1e-12)
    cos = unit @ unit.T
    iu = np.triu_indices(k, 1)
    pairs = cos[iu]
    g = v @ v.T
    etf = (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1)
    return {
        "equinorm": float(equinorm),
        "equiangularity": float(pairs.std()),
        "max_angle": float(np.abs(pairs + 1 / (k - 1)).mean()),
        "etf_error": float(np.linalg.norm(g / np.linalg.norm(g) - etf)),
    }


def measures(images, labels, text):
    h = normalise(images.astype(np.float64))
    t = normalise(text.astype(np.float64))
    n, d = h.shape
    k = t.shape[0]
    mu = np.stack([h[labels == c].mean(axis=0) for c in range(k)])  # K x d
    mu_g = mu.mean(axis=0)
    m = (mu - mu_g).T  # d x K
    r = h - mu[labels]
    s_w = r.T @ r / n
    s_b = m @ m.T / k
    nc1 = np.trace(s_w @ np.linalg.pinv(s_b, rcond=PINV_RCOND, hermitian=True)) / k
    t_c = t - t.mean(axis=0)
    nc3 = np.linalg.norm(t_c / np.linalg.norm(t_c) - m.T / np.linalg.norm(m))
    pred = np.argmax(h @ t.T, axis=1)
    nearest = np.argmin(((h[:, None, :] - mu[None, :, :]) ** 2).sum(axis=2), axis=1)
    image = {"nc1": float(nc1)}
    image.update(geometry(m.T))
    return {
        "image": image,
        "text": geometry(t_c),
        "nc3": float(nc3),
        "nc4": float((pred == nearest).mean()),
        "accuracy": float((pred == labels).mean()),
    }


def dataset(rng, d, k, sizes, spread):
    centres = rng.standard_normal((k, d))
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    rng.shuffle(labels)
    images = (centres[labels] + spread * rng.standard_normal((len(labels), d))).astype(np.float32)
    text = (centres + 0.5 * rng.standard_normal((k, d))).astype(np.float32)
    return images, labels, text


def nc_goldens():
    cases = []
    specs = [("imbalanced", 1, 8, [4, 8, 12, 16], 0.6), ("balanced", 2, 16, [10] * 6, 0.8),
             ("wide", 3, 5, [5] * 7, 0.5)]
    for name, seed, d, sizes, spread in specs:
        rng = np.random.default_rng(seed)
        images, labels, text = dataset(rng, d, len(sizes), sizes, spread)
        cases.append({
            "name": name, "dimension": d, "classes": len(sizes),
            "images": f32list(images), "labels": [int(y) for y in labels], "text": f32list(text),
            "expected": measures(images, labels, text),
        })
    return {"pinv_rcond": PINV_RCOND, "cases": cases}


def logreg_objective(x, y, k, c, w, b):
    z = x @ w.T + b
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return c * -logp[np.arange(len(y)), y].sum() + 0.5 * (w * w).sum()


def logreg_newton(x, y, k, c):
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))])  # N x (d+1)
    theta = np.zeros((k, d + 1))
    onehot = np.eye(k)[y]
    reg = np.diag(np.r_[np.ones(d), 0.0])
    for _ in range(200):
        z = xa @ theta.T
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        grad = c * (p - onehot).T @ xa + theta @ reg  # K x (d+1)
        hess = np.zeros((k * (d + 1), k * (d + 1)))
        for i in range(n):
            a = np.diag(p[i]) - np.outer(p[i], p[i])
            hess += c * np.kron(a, np.outer(xa[i], xa[i]))
        hess += np.kron(np.eye(k), reg)
        step = np.linalg.lstsq(hess, grad.ravel(), rcond=1e-13)[0].reshape(k, d + 1)
        theta -= step
        if np.abs(grad).max() < 1e-13:
            break
    w, b = theta[:, :d], theta[:, d]
    b = b - b.mean()
    return w, b


def logreg_goldens():
    rng = np.random.default_rng(7)
    d, k, n = 5, 3, 30
    centres = 1.5 * rng.standard_normal((k, d))
    y = np.arange(n) % k
    rng.shuffle(y)
    x = (centres[y] + rng.standard_normal((n, d))).astype(np.float32)
    fits = []
    for c in [0.1, 1.0, 100.0]:
        w, b = logreg_newton(x.astype(np.float64), y, k, c)
        pred = np.argmax(x.astype(np.float64) @ w.T + b, axis=1)
        fits.append({"c": c, "weights": [float(v) for v in w.ravel()], "bias": [float(v) for v in b],
                     "objective": float(logreg_objective(x.astype(np.float64), y, k, c, w, b)),
                     "predictions": [int(p) for p in pred]})
    return {"dimension": d, "classes": k, "features": f32list(x), "labels": [int(v) for v in y], "fits": fits}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in [("nc.json", nc_goldens()), ("logreg.json", logreg_goldens())]:
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        print("wrote", os.path.join(OUT, name))


if __name__ == "__main__":
    main()
