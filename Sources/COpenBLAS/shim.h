#include <cblas.h>
// OpenBLAS extensions used to pin the thread count (see TensorCore/Threads.swift).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
// LAPACK (shipped inside OpenBLAS): symmetric eigen-decomposition, Fortran calling convention.
void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
            double *work, const int *lwork, int *info);
