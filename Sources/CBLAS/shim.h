#ifndef EOSIN_CBLAS_SHIM_H
#define EOSIN_CBLAS_SHIM_H
#include <cblas.h>
/* OpenBLAS extensions, declared in its cblas.h: openblas_set_num_threads, openblas_get_num_threads. */
/* A CPU pause hint for spin-wait loops (Swift has no portable intrinsic). */
static inline void eosin_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}
#endif
