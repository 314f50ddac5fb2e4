#ifndef PT_CKERNELS_H
#define PT_CKERNELS_H
// Vectorised element-wise and row-wise kernels for TensorCore.
//
// Each kernel body is written once with clang vector extensions and compiled twice: with an
// AVX-512 target attribute and for the baseline x86-64 (or the host architecture elsewhere).
// The choice is made at run time (`pt_kernels_isa`). No compiler flags are needed, so PromptTune
// stays usable as a SwiftPM dependency (SwiftPM refuses `unsafeFlags` in dependencies).
//
// Shapes are given as letters: N rows, C columns. Backward kernels ACCUMULATE (+=) into their
// input-gradient and parameter-gradient outputs; a NULL parameter-gradient pointer skips it.

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the AVX-512 versions run, 0 for the portable ones. PT_KERNELS=generic forces 0.
int pt_kernels_isa(void);
/// Forces the portable (0) or AVX-512 (1, if the CPU has it) kernels; returns the choice in force.
int pt_kernels_set_isa(int avx512);

// LayerNorm over the last axis. out, inp: N x C; mean, rstd: N (kept for the backward).
void pt_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, long N, long C, float eps);
void pt_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, long N, long C);

// Row softmax in place over N x C. When causal_offset >= 0, row r keeps only columns
// j < causal_offset + r + 1 (a causal mask for a query block that starts at causal_offset);
// masked entries become exactly 0.
void pt_softmax_rows(float *x, long N, long C, long causal_offset);
// dinp = p * (dout - sum(dout * p)) per row (overwrites dinp; dinp may alias dout).
void pt_softmax_backward(float *dinp, const float *dout, const float *p, long N, long C);

// QuickGELU y = x * sigmoid(1.702 x), element-wise over n values.
void pt_quickgelu_forward(float *out, const float *inp, long n);
void pt_quickgelu_backward(float *dinp, const float *inp, const float *dout, long n);

// out = a + b; acc += x; acc += alpha * x.
void pt_add(float *out, const float *a, const float *b, long n);
void pt_accumulate(float *acc, const float *x, long n);
void pt_axpy(float *acc, float alpha, const float *x, long n);
// out = the nearest fp16 value of inp (round-to-nearest-even, subnormals, overflow to +-inf, NaN
// kept), as fp32; out may be inp.
void pt_round_half(float *out, const float *inp, long n);
// out[r, :] = bias for each of N rows (the starting value of a GEMM with beta = 1).
void pt_broadcast_rows(float *out, const float *bias, long N, long C);
// acc[c] += sum over rows of x[r, c].
void pt_colsum_accumulate(float *acc, const float *x, long N, long C);
// dot product.
float pt_dot(const float *a, const float *b, long n);

// C = alpha * op(A) op(B) + beta * C, row-major with leading dimensions, for small products
// (attention blocks of a few tokens) where a BLAS call's fixed cost dominates. No packing.
void pt_gemm_small(int transA, int transB, long m, long n, long k, float alpha, const float *A, long lda,
                   const float *B, long ldb, float beta, float *C, long ldc);

// L2 normalisation of each row: out = x / ||x||; norms: N (kept for the backward).
void pt_l2norm_forward(float *out, float *norms, const float *inp, long N, long C);
// dinp += (dout - y * <dout, y>) / norm, with y the forward output.
void pt_l2norm_backward(float *dinp, const float *dout, const float *out, const float *norms,
                        long N, long C);


// ---------------------------------------------------------------------------- CPU features
// (cpu.c) What the CPU and the OS support (cpuid and xgetbv: the OS must save the registers), and
// OpenBLAS's kernel choice measured against it. Debian's OpenBLAS 0.3.21 picks its kernels from
// the CPU model and falls back to Prescott (SSE3) on models it does not know.

#define PT_CPU_AVX 1u
#define PT_CPU_FMA 2u
#define PT_CPU_AVX2 4u
#define PT_CPU_AVX512 8u        // F, DQ, BW, VL
#define PT_CPU_AVX512_BF16 16u
#define PT_CPU_AMX_BF16 32u     // AMX-TILE and AMX-BF16 with the tile state enabled by the OS

unsigned pt_cpu_features(void);

// Vector levels, for comparing the CPU with an OpenBLAS core.
enum { PT_LEVEL_SSE = 0, PT_LEVEL_AVX = 1, PT_LEVEL_AVX2 = 2, PT_LEVEL_AVX512 = 3, PT_LEVEL_AVX512_BF16 = 4 };
int pt_cpu_level(unsigned features);
// The level of an OpenBLAS core name (as `openblas_get_corename` or OPENBLAS_CORETYPE spell it,
// any case); -1 for NULL.
int pt_openblas_core_level(const char *name);
// The OpenBLAS core to use at a level, or NULL (SSE: any core will do).
const char *pt_openblas_core_for_level(int level);
// Re-runs OpenBLAS's dynamic-architecture selection with OPENBLAS_CORETYPE=core (the variable is
// restored afterwards). Call it while no OpenBLAS call runs. 0 on success, -1 when the loaded
// OpenBLAS has no dynamic dispatch.
int pt_openblas_reselect_core(const char *core);
// Sets the OpenMP thread count of the calling thread (oneDNN's pool); -1 without OpenMP.
int pt_omp_set_threads(int n);

typedef void (*pt_parallel_task)(void *ctx, int worker, int team);
int pt_parallel(long workers, pt_parallel_task fn, void *ctx);
// A loop of independent vector FMAs (AVX-512, else AVX2, else scalar) on the calling thread: the
// fp32 peak that `prompttune bench gemm` measures GEMMs against. Returns the FLOPs done.
double pt_fma_peak_loop(long iters, float *sink);

#ifdef __cplusplus
}
#endif
#endif
