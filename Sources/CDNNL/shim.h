#include <oneapi/dnnl/dnnl.h>
// oneDNN here is built on OpenMP; its thread count is OpenMP's.
void omp_set_num_threads(int num_threads);
int omp_get_max_threads(void);
#include <oneapi/dnnl/dnnl_debug.h>
// glibc's allocator settings, for tensor buffers (Tensor.allocatorPolicy).
#include <malloc.h>
