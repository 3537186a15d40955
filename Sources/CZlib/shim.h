#ifndef EOSIN_CZLIB_SHIM_H
#define EOSIN_CZLIB_SHIM_H
/* zlib, for reading gzipped vocabulary files (CLIP's bpe_simple_vocab_16e6.txt.gz). */
#include <zlib.h>
#endif
