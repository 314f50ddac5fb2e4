// See include/CKernels.h ("CPU features and OpenBLAS's kernel choice").
#include "CKernels.h"
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#if defined(__x86_64__)
// XCR0: which register states the OS saves (SSE, AVX, AVX-512, AMX tiles).
static unsigned long long xcr0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

unsigned pt_cpu_features(void) {
    unsigned f = 0;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    unsigned long long x = osxsave ? xcr0() : 0;
    int ymm = (x & 0x6) == 0x6, zmm = ymm && (x & 0xe0) == 0xe0, tiles = (x & 0x60000) == 0x60000;
    if (avx && ymm) f |= PT_CPU_AVX;
    if (fma && ymm) f |= PT_CPU_FMA;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if (((b >> 5) & 1) && ymm) f |= PT_CPU_AVX2;
        if (zmm && ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1))
            f |= PT_CPU_AVX512;  // F, DQ, BW, VL
        if (tiles && ((d >> 22) & 1) && ((d >> 24) & 1)) f |= PT_CPU_AMX_BF16;  // AMX-BF16, AMX-TILE
        unsigned a1, b1, c1, d1;
        if ((f & PT_CPU_AVX512) && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && ((a1 >> 5) & 1))
            f |= PT_CPU_AVX512_BF16;
    }
#endif
    return f;
}

int pt_cpu_level(unsigned f) {
    if (f & (PT_CPU_AVX512_BF16 | PT_CPU_AMX_BF16)) return PT_LEVEL_AVX512_BF16;
    if (f & PT_CPU_AVX512) return PT_LEVEL_AVX512;
    if ((f & PT_CPU_AVX2) && (f & PT_CPU_FMA)) return PT_LEVEL_AVX2;
    if (f & PT_CPU_AVX) return PT_LEVEL_AVX;
    return PT_LEVEL_SSE;
}

// OpenBLAS's x86-64 DYNAMIC_ARCH cores (0.3.21 and later) by the widest vectors they use.
static const struct { const char *name; int level; } cores[] = {
    {"SAPPHIRERAPIDS", PT_LEVEL_AVX512_BF16}, {"COOPERLAKE", PT_LEVEL_AVX512_BF16},
    {"SKYLAKEX", PT_LEVEL_AVX512},
    {"HASWELL", PT_LEVEL_AVX2}, {"ZEN", PT_LEVEL_AVX2}, {"EXCAVATOR", PT_LEVEL_AVX2},
    {"SANDYBRIDGE", PT_LEVEL_AVX}, {"BULLDOZER", PT_LEVEL_AVX}, {"PILEDRIVER", PT_LEVEL_AVX},
    {"STEAMROLLER", PT_LEVEL_AVX},
};

int pt_openblas_core_level(const char *name) {
    if (!name) return -1;
    for (size_t i = 0; i < sizeof cores / sizeof cores[0]; i++)
        if (strcasecmp(name, cores[i].name) == 0) return cores[i].level;
    return PT_LEVEL_SSE;  // Prescott, Core2, Nehalem, Atom, Barcelona, ...: SSE kernels
}

const char *pt_openblas_core_for_level(int level) {
    switch (level) {
    case PT_LEVEL_AVX512_BF16: return "COOPERLAKE";
    case PT_LEVEL_AVX512: return "SKYLAKEX";
    case PT_LEVEL_AVX2: return "HASWELL";
    case PT_LEVEL_AVX: return "SANDYBRIDGE";
    default: return NULL;
    }
}

int pt_openblas_reselect_core(const char *core) {
    // Exported by DYNAMIC_ARCH builds (Debian's): init reads OPENBLAS_CORETYPE, quit clears the
    // choice. Looked up at run time so that other OpenBLAS builds still link.
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    if (!init || !quit || !core) return -1;
    const char *prior = getenv("OPENBLAS_CORETYPE");
    char *saved = prior ? strdup(prior) : NULL;
    setenv("OPENBLAS_CORETYPE", core, 1);
    quit();
    init();
    if (saved) { setenv("OPENBLAS_CORETYPE", saved, 1); free(saved); }
    else unsetenv("OPENBLAS_CORETYPE");
    return 0;
}

int pt_omp_set_threads(int n) {
    // oneDNN (Debian's build) runs on libgomp; its thread count is per calling thread.
    static int (*get)(void);
    static void (*set)(int);
    static int looked;
    if (!looked) {
        get = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
        set = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
        looked = 1;
    }
    if (!get || !set) return -1;
    if (get() != n) set(n);
    return n;
}

// Runs fn(ctx, worker, team) on a team of up to `workers` threads of libgomp's pool (the pool
// oneDNN's GEMMs run on), the calling thread as worker 0, and returns when all are done. Loops
// between GEMMs then share the GEMMs' threads instead of racing their spin-waiting on the same
// cores. `team` is the team's real size (it may be smaller than asked). Returns 0, running
// nothing, where libgomp is not loaded.
struct pt_parallel_call { pt_parallel_task fn; void *ctx; int (*thread)(void); int (*team)(void); };

static void pt_parallel_trampoline(void *data) {
    struct pt_parallel_call *c = data;
    c->fn(c->ctx, c->thread(), c->team());
}

int pt_parallel(long workers, pt_parallel_task fn, void *ctx) {
    static void (*gomp_parallel)(void (*)(void *), void *, unsigned, unsigned);
    static int (*thread)(void), (*team)(void);
    static int looked;
    if (!looked) {
        gomp_parallel = (void (*)(void (*)(void *), void *, unsigned, unsigned))dlsym(RTLD_DEFAULT, "GOMP_parallel");
        thread = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_thread_num");
        team = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_num_threads");
        looked = 1;
    }
    if (!gomp_parallel || !thread || !team || workers < 1) return 0;
    struct pt_parallel_call c = { fn, ctx, thread, team };
    gomp_parallel(pt_parallel_trampoline, &c, (unsigned)workers, 0);
    return 1;
}

// ---------------------------------------------------------------------------- FMA peak
// Twelve independent chains of vector FMAs: enough in flight to fill two FMA pipes of latency 4-6.
#define FMA_LOOP(VT, iters)                                                                      \
    VT b = {0}, c = {0}, a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0},  \
       a7 = {0}, a8 = {0}, a9 = {0}, a10 = {0}, a11 = {0};                                     \
    b += 1.0000001f; c += 1e-7f;                                                               \
    for (long i = 0; i < iters; i++) {                                                        \
        a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c;                    \
        a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;                    \
        a8 = a8 * b + c; a9 = a9 * b + c; a10 = a10 * b + c; a11 = a11 * b + c;                \
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5),       \
                         "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));        \
    }                                                                                          \
    VT s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;                        \
    return s[0] + s[1];

#if defined(__x86_64__)
typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
__attribute__((target("avx512f,fma"))) static float fma_avx512(long iters) { FMA_LOOP(v16, iters) }
__attribute__((target("avx2,fma"))) static float fma_avx2(long iters) { FMA_LOOP(v8, iters) }
#endif

double pt_fma_peak_loop(long iters, float *sink) {
#if defined(__x86_64__)
    unsigned f = pt_cpu_features();
    if (f & PT_CPU_AVX512) { *sink = fma_avx512(iters); return 2.0 * 16 * 12 * (double)iters; }
    if ((f & PT_CPU_AVX2) && (f & PT_CPU_FMA)) { *sink = fma_avx2(iters); return 2.0 * 8 * 12 * (double)iters; }
#endif
    float a = 0;
    for (long i = 0; i < iters; i++) a = a * 1.0000001f + 1e-7f;
    *sink = a;
    return 2.0 * (double)iters;
}
