// oneDNN's C API (Debian's libdnnl-dev 2.6; it ships no pkg-config file, the headers are in
// /usr/include). TensorCore uses its matmul and reorder primitives (see TensorCore/OneDNN.swift).
#include <oneapi/dnnl/dnnl.h>
