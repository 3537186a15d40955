#ifndef EOSIN_CHDF5SYS_SHIM_H
#define EOSIN_CHDF5SYS_SHIM_H
#include <hdf5.h>
#endif
