#include <cblas.h>
// OpenBLAS extensions used to pin the thread count (see TensorCore/Threads.swift).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
