#ifndef EOSIN_CCRYPTO_SHIM_H
#define EOSIN_CCRYPTO_SHIM_H
#include <openssl/evp.h>
#endif
