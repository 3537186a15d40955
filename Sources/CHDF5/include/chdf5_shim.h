#ifndef EOSIN_CHDF5_SHIM_H
#define EOSIN_CHDF5_SHIM_H
#include <stddef.h>
#include <stdint.h>

/// Writes tile features in the layout TRIDENT and CLAM read: dataset `features` (n x d float32),
/// dataset `coords` (n x 2 int64), and the given attributes on the file, on `coords` and on
/// `features`. Numeric attributes are `num_names[i] = num_values[i]`, string ones
/// `str_names[i] = str_values[i]`. Returns 0, or -1 with a message in err.
int eosin_h5_write_features(const char *path, const float *features, int64_t n, int64_t d, const int64_t *coords,
                            const char *const *num_names, const double *num_values, int num_count,
                            const char *const *str_names, const char *const *str_values, int str_count, char *err,
                            size_t errlen);

/// A streaming feature file: created with its coords by eosin_h5_open (NULL with a message in err
/// on failure), filled row block by row block with eosin_h5_write_rows, finished (attributes
/// written, handle freed) by eosin_h5_close, which must be called once for every open writer.
typedef struct eosin_h5_writer eosin_h5_writer;
eosin_h5_writer *eosin_h5_open(const char *path, int64_t n, int64_t d, const int64_t *coords, char *err, size_t errlen);
int eosin_h5_write_rows(eosin_h5_writer *w, int64_t row0, int64_t count, const float *rows, char *err, size_t errlen);
int eosin_h5_close(eosin_h5_writer *w, const char *const *num_names, const double *num_values, int num_count,
                   const char *const *str_names, const char *const *str_values, int str_count, char *err, size_t errlen);

/// Reads the shape of a 2-D dataset and its first row as doubles (up to `max` values), for tests.
int eosin_h5_read_first_row(const char *path, const char *dataset, int64_t *rows, int64_t *cols, double *first,
                            int64_t max, char *err, size_t errlen);

/// Reads a numeric attribute of the `coords` dataset (for tests). Returns 0 or -1.
int eosin_h5_read_coords_attribute(const char *path, const char *name, double *value);
#endif
