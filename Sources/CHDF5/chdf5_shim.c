// HDF5 through its C API; the type ids (H5T_NATIVE_FLOAT, ...) are macros that Swift cannot
// import, hence this shim.
#include "chdf5_shim.h"
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *msg) {
  if (err && errlen) snprintf(err, errlen, "%s", msg);
  return -1;
}

static int num_attr(hid_t obj, const char *name, double v) {
  hid_t s = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, H5T_NATIVE_DOUBLE, s, H5P_DEFAULT, H5P_DEFAULT);
  int ok = a >= 0 && H5Awrite(a, H5T_NATIVE_DOUBLE, &v) >= 0;
  if (a >= 0) H5Aclose(a);
  H5Sclose(s);
  return ok ? 0 : -1;
}

static int str_attr(hid_t obj, const char *name, const char *v) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, strlen(v) > 0 ? strlen(v) : 1);
  H5Tset_strpad(t, H5T_STR_NULLTERM);
  hid_t s = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
  int ok = a >= 0 && H5Awrite(a, t, v) >= 0;
  if (a >= 0) H5Aclose(a);
  H5Sclose(s);
  H5Tclose(t);
  return ok ? 0 : -1;
}

int eosin_h5_write_features(const char *path, const float *features, int64_t n, int64_t d, const int64_t *coords,
                            const char *const *num_names, const double *num_values, int num_count,
                            const char *const *str_names, const char *const *str_values, int str_count, char *err,
                            size_t errlen) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);  // errors come back as return codes, not printed
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) return fail(err, errlen, "cannot create the HDF5 file");
  int rc = 0;
  hsize_t fd[2] = {(hsize_t)n, (hsize_t)d}, cd[2] = {(hsize_t)n, 2};
  hid_t fs = H5Screate_simple(2, fd, NULL), cs = H5Screate_simple(2, cd, NULL);
  hid_t fset = H5Dcreate2(f, "features", H5T_NATIVE_FLOAT, fs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hid_t cset = H5Dcreate2(f, "coords", H5T_NATIVE_INT64, cs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (fset < 0 || cset < 0) rc = fail(err, errlen, "cannot create the datasets");
  if (rc == 0 && n > 0 && H5Dwrite(fset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, features) < 0)
    rc = fail(err, errlen, "cannot write the features (disk full?)");
  if (rc == 0 && n > 0 && H5Dwrite(cset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, coords) < 0)
    rc = fail(err, errlen, "cannot write the coordinates (disk full?)");
  for (int i = 0; rc == 0 && i < num_count; i++) {
    if (num_attr(cset, num_names[i], num_values[i]) < 0 || num_attr(f, num_names[i], num_values[i]) < 0)
      rc = fail(err, errlen, "cannot write an attribute");
  }
  for (int i = 0; rc == 0 && i < str_count; i++) {
    if (str_attr(f, str_names[i], str_values[i]) < 0 || str_attr(fset, str_names[i], str_values[i]) < 0)
      rc = fail(err, errlen, "cannot write an attribute");
  }
  if (fset >= 0) H5Dclose(fset);
  if (cset >= 0) H5Dclose(cset);
  H5Sclose(fs);
  H5Sclose(cs);
  if (H5Fclose(f) < 0 && rc == 0) rc = fail(err, errlen, "cannot close the HDF5 file (disk full?)");
  return rc;
}

int eosin_h5_read_first_row(const char *path, const char *dataset, int64_t *rows, int64_t *cols, double *first,
                            int64_t max, char *err, size_t errlen) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return fail(err, errlen, "not an HDF5 file");
  hid_t ds = H5Dopen2(f, dataset, H5P_DEFAULT);
  if (ds < 0) {
    H5Fclose(f);
    return fail(err, errlen, "no such dataset");
  }
  hid_t sp = H5Dget_space(ds);
  hsize_t dims[2] = {0, 0};
  int rank = H5Sget_simple_extent_dims(sp, dims, NULL);
  int rc = 0;
  if (rank != 2) {
    rc = fail(err, errlen, "not a 2-D dataset");
  } else {
    *rows = (int64_t)dims[0];
    *cols = (int64_t)dims[1];
    if (dims[0] > 0 && (int64_t)dims[1] <= max) {
      hsize_t start[2] = {0, 0}, count[2] = {1, dims[1]};
      H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL);
      hid_t ms = H5Screate_simple(2, count, NULL);
      if (H5Dread(ds, H5T_NATIVE_DOUBLE, ms, sp, H5P_DEFAULT, first) < 0) rc = fail(err, errlen, "cannot read");
      H5Sclose(ms);
    }
  }
  H5Sclose(sp);
  H5Dclose(ds);
  H5Fclose(f);
  return rc;
}

int eosin_h5_read_coords_attribute(const char *path, const char *name, double *value) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return -1;
  hid_t ds = H5Dopen2(f, "coords", H5P_DEFAULT);
  int rc = -1;
  if (ds >= 0) {
    hid_t a = H5Aopen(ds, name, H5P_DEFAULT);
    if (a >= 0) {
      rc = H5Aread(a, H5T_NATIVE_DOUBLE, value) < 0 ? -1 : 0;
      H5Aclose(a);
    }
    H5Dclose(ds);
  }
  H5Fclose(f);
  return rc;
}

/* Streaming writer: the file and both datasets are created at open (n and d are known from the
 * tile grid), coords are written then, feature rows as they are encoded, attributes at close. */
struct eosin_h5_writer {
  hid_t f, fset, cset;
  int64_t n, d;
};

eosin_h5_writer *eosin_h5_open(const char *path, int64_t n, int64_t d, const int64_t *coords, char *err, size_t errlen) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) {
    fail(err, errlen, "cannot create the HDF5 file");
    return NULL;
  }
  hsize_t fd[2] = {(hsize_t)n, (hsize_t)d}, cd[2] = {(hsize_t)n, 2};
  hid_t fs = H5Screate_simple(2, fd, NULL), cs = H5Screate_simple(2, cd, NULL);
  hid_t fset = H5Dcreate2(f, "features", H5T_NATIVE_FLOAT, fs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hid_t cset = H5Dcreate2(f, "coords", H5T_NATIVE_INT64, cs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Sclose(fs);
  H5Sclose(cs);
  int ok = fset >= 0 && cset >= 0;
  if (!ok) fail(err, errlen, "cannot create the datasets");
  if (ok && n > 0 && H5Dwrite(cset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, coords) < 0) {
    ok = 0;
    fail(err, errlen, "cannot write the coordinates (disk full?)");
  }
  if (!ok) {
    if (fset >= 0) H5Dclose(fset);
    if (cset >= 0) H5Dclose(cset);
    H5Fclose(f);
    return NULL;
  }
  eosin_h5_writer *w = (eosin_h5_writer *)calloc(1, sizeof *w);
  w->f = f;
  w->fset = fset;
  w->cset = cset;
  w->n = n;
  w->d = d;
  return w;
}

int eosin_h5_write_rows(eosin_h5_writer *w, int64_t row0, int64_t count, const float *rows, char *err, size_t errlen) {
  if (count <= 0) return 0;
  if (row0 < 0 || row0 + count > w->n) return fail(err, errlen, "rows outside the dataset");
  hid_t fs = H5Dget_space(w->fset);
  hsize_t start[2] = {(hsize_t)row0, 0}, cnt[2] = {(hsize_t)count, (hsize_t)w->d};
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
  hid_t ms = H5Screate_simple(2, cnt, NULL);
  int rc = H5Dwrite(w->fset, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, rows) < 0 ? fail(err, errlen, "cannot write the features (disk full?)") : 0;
  H5Sclose(ms);
  H5Sclose(fs);
  return rc;
}

int eosin_h5_close(eosin_h5_writer *w, const char *const *num_names, const double *num_values, int num_count,
                   const char *const *str_names, const char *const *str_values, int str_count, char *err, size_t errlen) {
  int rc = 0;
  for (int i = 0; rc == 0 && i < num_count; i++) {
    if (num_attr(w->cset, num_names[i], num_values[i]) < 0 || num_attr(w->f, num_names[i], num_values[i]) < 0)
      rc = fail(err, errlen, "cannot write an attribute");
  }
  for (int i = 0; rc == 0 && i < str_count; i++) {
    if (str_attr(w->f, str_names[i], str_values[i]) < 0 || str_attr(w->fset, str_names[i], str_values[i]) < 0)
      rc = fail(err, errlen, "cannot write an attribute");
  }
  H5Dclose(w->fset);
  H5Dclose(w->cset);
  if (H5Fclose(w->f) < 0 && rc == 0) rc = fail(err, errlen, "cannot close the HDF5 file (disk full?)");
  free(w);
  return rc;
}
