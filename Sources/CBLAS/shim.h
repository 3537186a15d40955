#ifndef EOSIN_CBLAS_SHIM_H
#define EOSIN_CBLAS_SHIM_H
#include <cblas.h>
/* OpenBLAS extensions, declared in its cblas.h: openblas_set_num_threads, openblas_get_num_threads. */
#endif
