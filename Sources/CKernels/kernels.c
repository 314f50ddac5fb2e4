// See include/CKernels.h for the contract. Bodies are `static inline` templates instantiated
// twice by DISPATCH: once under an AVX-512 target attribute, once portable.
#include "CKernels.h"
// The helpers below pass 64-byte vectors by value; they are always inlined, so the ABI note
// clang gives for the portable instantiation does not apply.
#pragma clang diagnostic ignored "-Wpsabi"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef float vf __attribute__((vector_size(64)));  // 16 floats: one zmm register
typedef int vi __attribute__((vector_size(64)));
#define VW 16
#define INLINE static inline __attribute__((always_inline))

INLINE vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
INLINE void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
INLINE vf vsplat(float x) { vf v = {0}; return v + x; }
INLINE float vsum(vf v) {
    // Pairwise tree: the compiler turns it into shuffles.
    float s[VW];
    memcpy(s, &v, sizeof v);
    for (int w = VW / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++) s[i] += s[i + w];
    return s[0];
}
INLINE float vmaxred(vf v) {
    float m = v[0];
    for (int i = 1; i < VW; i++) m = v[i] > m ? v[i] : m;
    return m;
}

// exp with Cephes' expf polynomial (about 1 ulp on [-87, 88]); inputs are clamped.
INLINE vf vexp(vf x) {
    x = __builtin_elementwise_min(x, vsplat(88.3762626647949f));
    x = __builtin_elementwise_max(x, vsplat(-87.3365447505531f));
    vf fx = __builtin_elementwise_floor(x * 1.44269504088896341f + 0.5f);
    vf r = x - fx * 0.693359375f + fx * 2.12194440e-4f;
    vf r2 = r * r;
    vf y = vsplat(1.9875691500E-4f);
    y = y * r + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * r2 + r + 1.0f;
    vi n = __builtin_convertvector(fx, vi);
    n = (n + 127) << 23;
    vf pow2n;
    memcpy(&pow2n, &n, sizeof n);
    return y * pow2n;
}
INLINE float sexp(float x) { return expf(x); }

static int isa_choice = -1;
int pt_kernels_isa(void) {
    if (isa_choice < 0) {
        const char *force = getenv("PT_KERNELS");
        int ok = 0;
#if defined(__x86_64__)
        __builtin_cpu_init();
        ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#endif
        if (force && strcmp(force, "generic") == 0) ok = 0;
        isa_choice = ok;
    }
    return isa_choice;
}

int pt_kernels_set_isa(int avx512) {
    isa_choice = -1;
    int have = pt_kernels_isa();
    isa_choice = avx512 && have;
    return isa_choice;
}

#if defined(__x86_64__)
#define PT_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#define DISPATCH(ret, name, params, args)                                       \
    PT_AVX512 static ret name##_avx512 params { return name##_impl args; }      \
    static ret name##_generic params { return name##_impl args; }               \
    ret name params {                                                           \
        return pt_kernels_isa() ? name##_avx512 args : name##_generic args;     \
    }
#else
#define DISPATCH(ret, name, params, args) ret name params { return name##_impl args; }
#endif

// ---------------------------------------------------------------------------- LayerNorm

INLINE void pt_layernorm_forward_impl(float *out, float *mean, float *rstd, const float *inp,
                                      const float *weight, const float *bias, long N, long C,
                                      float eps) {
    for (long r = 0; r < N; r++) {
        const float *x = inp + r * C;
        float *y = out + r * C;
        vf acc = vsplat(0);
        long c = 0;
        for (; c + VW <= C; c += VW) acc += vload(x + c);
        float s = vsum(acc);
        for (; c < C; c++) s += x[c];
        float m = s / (float)C;
        acc = vsplat(0);
        c = 0;
        for (; c + VW <= C; c += VW) { vf d = vload(x + c) - m; acc += d * d; }
        float v = vsum(acc);
        for (; c < C; c++) { float d = x[c] - m; v += d * d; }
        float rs = 1.0f / sqrtf(v / (float)C + eps);
        c = 0;
        for (; c + VW <= C; c += VW)
            vstore(y + c, (vload(x + c) - m) * rs * vload(weight + c) + vload(bias + c));
        for (; c < C; c++) y[c] = (x[c] - m) * rs * weight[c] + bias[c];
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = rs;
    }
}
DISPATCH(void, pt_layernorm_forward,
         (float *out, float *mean, float *rstd, const float *inp, const float *weight,
          const float *bias, long N, long C, float eps),
         (out, mean, rstd, inp, weight, bias, N, C, eps))

INLINE void pt_layernorm_backward_impl(float *dinp, float *dweight, float *dbias,
                                       const float *dout, const float *inp, const float *weight,
                                       const float *mean, const float *rstd, long N, long C) {
    for (long r = 0; r < N; r++) {
        const float *x = inp + r * C, *dy = dout + r * C;
        float *dx = dinp + r * C;
        float m = mean[r], rs = rstd[r];
        vf a1 = vsplat(0), a2 = vsplat(0);
        long c = 0;
        for (; c + VW <= C; c += VW) {
            vf norm = (vload(x + c) - m) * rs;
            vf dnorm = vload(weight + c) * vload(dy + c);
            a1 += dnorm;
            a2 += dnorm * norm;
        }
        float s1 = vsum(a1), s2 = vsum(a2);
        for (; c < C; c++) {
            float norm = (x[c] - m) * rs, dnorm = weight[c] * dy[c];
            s1 += dnorm;
            s2 += dnorm * norm;
        }
        s1 /= (float)C;
        s2 /= (float)C;
        c = 0;
        for (; c + VW <= C; c += VW) {
            vf norm = (vload(x + c) - m) * rs;
            vf dnorm = vload(weight + c) * vload(dy + c);
            vstore(dx + c, vload(dx + c) + (dnorm - s1 - norm * s2) * rs);
            if (dweight) vstore(dweight + c, vload(dweight + c) + norm * vload(dy + c));
            if (dbias) vstore(dbias + c, vload(dbias + c) + vload(dy + c));
        }
        for (; c < C; c++) {
            float norm = (x[c] - m) * rs, dnorm = weight[c] * dy[c];
            dx[c] += (dnorm - s1 - norm * s2) * rs;
            if (dweight) dweight[c] += norm * dy[c];
            if (dbias) dbias[c] += dy[c];
        }
    }
}
DISPATCH(void, pt_layernorm_backward,
         (float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
          const float *weight, const float *mean, const float *rstd, long N, long C),
         (dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C))

// ---------------------------------------------------------------------------- Softmax

INLINE void pt_softmax_rows_impl(float *x, long N, long C, long causal_offset) {
    for (long r = 0; r < N; r++) {
        float *row = x + r * C;
        long n = C;
        if (causal_offset >= 0 && causal_offset + r + 1 < C) n = causal_offset + r + 1;
        float mx = -INFINITY;
        long c = 0;
        if (n >= VW) {
            vf vm = vload(row);
            for (c = VW; c + VW <= n; c += VW) vm = __builtin_elementwise_max(vm, vload(row + c));
            mx = vmaxred(vm);
        }
        for (; c < n; c++) mx = row[c] > mx ? row[c] : mx;
        vf acc = vsplat(0);
        c = 0;
        for (; c + VW <= n; c += VW) {
            vf e = vexp(vload(row + c) - mx);
            vstore(row + c, e);
            acc += e;
        }
        float s = vsum(acc);
        for (; c < n; c++) { row[c] = sexp(row[c] - mx); s += row[c]; }
        float inv = 1.0f / s;
        c = 0;
        for (; c + VW <= n; c += VW) vstore(row + c, vload(row + c) * inv);
        for (; c < n; c++) row[c] *= inv;
        for (c = n; c < C; c++) row[c] = 0.0f;
    }
}
DISPATCH(void, pt_softmax_rows, (float *x, long N, long C, long causal_offset),
         (x, N, C, causal_offset))

INLINE void pt_softmax_backward_impl(float *dinp, const float *dout, const float *p, long N,
                                     long C) {
    for (long r = 0; r < N; r++) {
        const float *dy = dout + r * C, *y = p + r * C;
        float *dx = dinp + r * C;
        vf acc = vsplat(0);
        long c = 0;
        for (; c + VW <= C; c += VW) acc += vload(dy + c) * vload(y + c);
        float s = vsum(acc);
        for (; c < C; c++) s += dy[c] * y[c];
        c = 0;
        for (; c + VW <= C; c += VW) vstore(dx + c, vload(y + c) * (vload(dy + c) - s));
        for (; c < C; c++) dx[c] = y[c] * (dy[c] - s);
    }
}
DISPATCH(void, pt_softmax_backward,
         (float *dinp, const float *dout, const float *p, long N, long C), (dinp, dout, p, N, C))

// ---------------------------------------------------------------------------- QuickGELU

INLINE void pt_quickgelu_forward_impl(float *out, const float *inp, long n) {
    long i = 0;
    for (; i + VW <= n; i += VW) {
        vf x = vload(inp + i);
        vstore(out + i, x / (1.0f + vexp(x * -1.702f)));
    }
    for (; i < n; i++) out[i] = inp[i] / (1.0f + sexp(-1.702f * inp[i]));
}
DISPATCH(void, pt_quickgelu_forward, (float *out, const float *inp, long n), (out, inp, n))

INLINE void pt_quickgelu_backward_impl(float *dinp, const float *inp, const float *dout, long n) {
    long i = 0;
    for (; i + VW <= n; i += VW) {
        vf x = vload(inp + i);
        vf s = 1.0f / (1.0f + vexp(x * -1.702f));
        vf g = s + 1.702f * x * s * (1.0f - s);
        vstore(dinp + i, vload(dinp + i) + g * vload(dout + i));
    }
    for (; i < n; i++) {
        float x = inp[i], s = 1.0f / (1.0f + sexp(-1.702f * x));
        dinp[i] += (s + 1.702f * x * s * (1.0f - s)) * dout[i];
    }
}
DISPATCH(void, pt_quickgelu_backward, (float *dinp, const float *inp, const float *dout, long n),
         (dinp, inp, dout, n))

// ---------------------------------------------------------------------------- Element-wise

INLINE void pt_add_impl(float *out, const float *a, const float *b, long n) {
    long i = 0;
    for (; i + VW <= n; i += VW) vstore(out + i, vload(a + i) + vload(b + i));
    for (; i < n; i++) out[i] = a[i] + b[i];
}
DISPATCH(void, pt_add, (float *out, const float *a, const float *b, long n), (out, a, b, n))

INLINE void pt_axpy_impl(float *acc, float alpha, const float *x, long n) {
    long i = 0;
    for (; i + VW <= n; i += VW) vstore(acc + i, vload(acc + i) + alpha * vload(x + i));
    for (; i < n; i++) acc[i] += alpha * x[i];
}
DISPATCH(void, pt_axpy, (float *acc, float alpha, const float *x, long n), (acc, alpha, x, n))

void pt_accumulate(float *acc, const float *x, long n) { pt_add(acc, acc, x, n); }

// Round to the nearest fp16 value, returned as fp32 (IEEE round-to-nearest-even): normal results
// drop 13 mantissa bits with ties to even (the carry may step the exponent); below 2^-14, adding
// and subtracting 0.5 rounds to the subnormal quantum 2^-24 in the FPU's own nearest-even; 65520
// and above overflow to infinity; infinities and NaNs pass unchanged. In place when out == inp.
INLINE vi round_half_bits(vi a) {
    vi normal = (a + 0xfff + ((a >> 13) & 1)) & (int)0xffffe000;
    vf f, r;
    memcpy(&f, &a, sizeof f);
    r = (f + 0.5f) - 0.5f;
    vi sub;
    memcpy(&sub, &r, sizeof sub);
    vi isSub = a < 0x38800000, isBig = a >= 0x477ff000, isSpecial = a >= 0x7f800000;
    vi y = (sub & isSub) | (normal & ~isSub);
    y = (y & ~isBig) | (0x7f800000 & isBig);
    return (y & ~isSpecial) | (a & isSpecial);
}

INLINE void pt_round_half_impl(float *out, const float *inp, long n) {
    long i = 0;
    for (; i + VW <= n; i += VW) {
        vi u;
        memcpy(&u, inp + i, sizeof u);
        vi y = round_half_bits(u & 0x7fffffff) | (u & (int)0x80000000);
        memcpy(out + i, &y, sizeof y);
    }
    if (i < n) {
        // The tail through one padded vector, so it rounds exactly as the body does.
        float in[VW] = {0}, res[VW];
        memcpy(in, inp + i, (size_t)(n - i) * sizeof(float));
        vi u;
        memcpy(&u, in, sizeof u);
        vi y = round_half_bits(u & 0x7fffffff) | (u & (int)0x80000000);
        memcpy(res, &y, sizeof y);
        memcpy(out + i, res, (size_t)(n - i) * sizeof(float));
    }
}
DISPATCH(void, pt_round_half, (float *out, const float *inp, long n), (out, inp, n))

void pt_broadcast_rows(float *out, const float *bias, long N, long C) {
    for (long r = 0; r < N; r++) memcpy(out + r * C, bias, (size_t)C * sizeof(float));
}

void pt_colsum_accumulate(float *acc, const float *x, long N, long C) {
    for (long r = 0; r < N; r++) pt_add(acc, acc, x + r * C, C);
}

INLINE float pt_dot_impl(const float *a, const float *b, long n) {
    vf acc = vsplat(0);
    long i = 0;
    for (; i + VW <= n; i += VW) acc += vload(a + i) * vload(b + i);
    float s = vsum(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}
DISPATCH(float, pt_dot, (const float *a, const float *b, long n), (a, b, n))

// ---------------------------------------------------------------------------- Small GEMM

INLINE void pt_gemm_small_impl(int transA, int transB, long m, long n, long k, float alpha, const float *A,
                               long lda, const float *B, long ldb, float beta, float *C, long ldc) {
    for (long i = 0; i < m; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f) memset(c, 0, (size_t)n * sizeof(float));
        else if (beta != 1.0f) for (long j = 0; j < n; j++) c[j] *= beta;
    }
    if (!transB) {
        // C[i, :] += alpha * A[i, p] * B[p, :], vectorised along the row of B.
        for (long i = 0; i < m; i++) {
            float *c = C + i * ldc;
            for (long p = 0; p < k; p++) {
                float a = alpha * (transA ? A[p * lda + i] : A[i * lda + p]);
                const float *b = B + p * ldb;
                long j = 0;
                for (; j + VW <= n; j += VW) vstore(c + j, vload(c + j) + a * vload(b + j));
                for (; j < n; j++) c[j] += a * b[j];
            }
        }
    } else if (!transA) {
        // C[i, j] += alpha * <A[i, :], B[j, :]>: a dot product along k.
        for (long i = 0; i < m; i++) {
            const float *a = A + i * lda;
            for (long j = 0; j < n; j++) {
                const float *b = B + j * ldb;
                vf acc = vsplat(0);
                long p = 0;
                for (; p + VW <= k; p += VW) acc += vload(a + p) * vload(b + p);
                float s = vsum(acc);
                for (; p < k; p++) s += a[p] * b[p];
                C[i * ldc + j] += alpha * s;
            }
        }
    } else {
        for (long i = 0; i < m; i++)
            for (long j = 0; j < n; j++) {
                float s = 0;
                for (long p = 0; p < k; p++) s += A[p * lda + i] * B[j * ldb + p];
                C[i * ldc + j] += alpha * s;
            }
    }
}
DISPATCH(void, pt_gemm_small,
         (int transA, int transB, long m, long n, long k, float alpha, const float *A, long lda, const float *B,
          long ldb, float beta, float *C, long ldc),
         (transA, transB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc))

// ---------------------------------------------------------------------------- L2 normalise

// A row whose sum of squares leaves float's normal range (a huge but finite feature overflows it to
// inf, which turned every embedding into zeros; a tiny one underflows) is scaled by its largest
// magnitude first. Rows in range take the plain path, bit for bit as before.
static void l2norm_row_scaled(float *out, float *norm, const float *x, long C) {
    float m = 0;
    for (long c = 0; c < C; c++) m = fmaxf(m, fabsf(x[c]));
    if (!(m > 0) || !isfinite(m)) {  // a zero or non-finite row: NaN out, as 0/0 gives; callers check
        for (long c = 0; c < C; c++) out[c] = x[c] / (m * 0.0f);
        *norm = m;
        return;
    }
    float invm = 1.0f / m, ss = 0;
    for (long c = 0; c < C; c++) { float v = x[c] * invm; ss += v * v; }
    float root = sqrtf(ss), scale = invm / root;
    *norm = m * root;  // may be inf for rows near FLT_MAX; the output is finite all the same
    for (long c = 0; c < C; c++) out[c] = x[c] * scale;
}

void pt_l2norm_forward(float *out, float *norms, const float *inp, long N, long C) {
    for (long r = 0; r < N; r++) {
        float ss = pt_dot(inp + r * C, inp + r * C, C);
        if (!(ss >= 1e-30f && ss <= 1e30f)) {
            float nrm;
            l2norm_row_scaled(out + r * C, &nrm, inp + r * C, C);
            if (norms) norms[r] = nrm;
            continue;
        }
        float nrm = sqrtf(ss);
        if (norms) norms[r] = nrm;
        float inv = 1.0f / nrm;
        for (long c = 0; c < C; c++) out[r * C + c] = inp[r * C + c] * inv;
    }
}

void pt_l2norm_backward(float *dinp, const float *dout, const float *out, const float *norms,
                        long N, long C) {
    for (long r = 0; r < N; r++) {
        const float *dy = dout + r * C, *y = out + r * C;
        float s = pt_dot(dy, y, C), inv = 1.0f / norms[r];
        for (long c = 0; c < C; c++) dinp[r * C + c] += (dy[c] - y[c] * s) * inv;
    }
}
