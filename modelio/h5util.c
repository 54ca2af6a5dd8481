/* HDF5 attribute and dataset helpers with one-line errors. */
#include "modelio/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"

static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
  char *msg = data;
  if (n == 0 && e->desc) snprintf(msg, 256, "%s (in %s)", e->desc, e->func_name);
  return 0;
}

/* The innermost HDF5 message alone, for errors about a user's file. */
static void h5_last_message(char *msg, size_t bytes) {
  char buf[256] = "unknown HDF5 error";
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5_walk_cb, buf);
  H5Eclear2(H5E_DEFAULT);
  snprintf(msg, bytes, "%s", buf);
}

void h5_error_line(char *err, size_t err_bytes, const char *expr, const char *file, int line) {
  char msg[256];
  h5_last_message(msg, sizeof msg);
  snprintf(err, err_bytes, "HDF5: %s failed at %s:%d: %s", expr, file, line, msg);
}

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* "<fmt...>: <HDF5's innermost message>", and the stack cleared. */
__attribute__((format(printf, 3, 4))) static void h5_fail(char *err, size_t eb, const char *fmt,
                                                          ...) {
  char msg[256], head[1024];
  h5_last_message(msg, sizeof msg);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  snprintf(err, eb, "%s: %s", head, msg);
}

/* ---- self-contained files: no byte of a model may come from elsewhere ---- */

/* External links are never traversed, whatever the file says. */
static herr_t h5_elink_refuse(const char *parent_file, const char *parent_group,
                              const char *child_file, const char *child_object,
                              unsigned *acc_flags, hid_t fapl, void *data) {
  (void)parent_file, (void)parent_group, (void)child_file, (void)child_object, (void)acc_flags;
  (void)fapl, (void)data;
  return -1;
}

#define H5_NOWHERE "/nonexistent/tfdist-refuses-files-outside-the-model/"

/* Access properties that close the doors out of the file: external links are
 * refused by callback, and external raw storage, external-link targets and
 * virtual-dataset sources are looked up under a folder that does not exist.
 * The first lock is h5_file_check_plain, run before anything is read; soft
 * links are left to it (H5Pset_nlinks(0) also fails plain hard-link opens in
 * files h5py has edited, under HDF5 1.10.8). */
static hid_t h5_closed_access(hid_t cls) {
  hid_t p = H5Pcreate(cls);
  if (p < 0) return -1;
  if (H5Pset_elink_cb(p, h5_elink_refuse, NULL) < 0 ||
      H5Pset_elink_prefix(p, H5_NOWHERE) < 0 ||
      (cls == H5P_DATASET_ACCESS && (H5Pset_efile_prefix(p, H5_NOWHERE) < 0 ||
                                     H5Pset_virtual_prefix(p, H5_NOWHERE) < 0))) {
    H5Pclose(p);
    return -1;
  }
  return p;
}

static hid_t h5_open_closed(hid_t loc, const char *name, int dataset) {
  hid_t apl = h5_closed_access(dataset ? H5P_DATASET_ACCESS : H5P_GROUP_ACCESS);
  if (apl < 0) return -1;
  hid_t id = dataset ? H5Dopen2(loc, name, apl) : H5Gopen2(loc, name, apl);
  hid_t stack = id < 0 ? H5Eget_current_stack() : -1; /* H5Pclose would clear it */
  H5Pclose(apl);
  if (stack >= 0) H5Eset_current_stack(stack);
  return id;
}

#define H5_MAX_LINKS 4096 /* a model has ~20 objects; a checkpoint a few more */

typedef struct {
  const char *path;
  char *err;
  size_t eb;
  int links;
} h5_walk;

/* What tfdist writes: contiguous (or compact) raw data inside the file, with
 * no filter. Names the dataset otherwise. */
static int h5_check_dataset(hid_t group, const char *name, h5_walk *w) {
  hid_t d = h5_open_closed(group, name, 1), dcpl = -1;
  int rc = -1;
  if (d < 0 || (dcpl = H5Dget_create_plist(d)) < 0) {
    h5_fail(w->err, w->eb, "%s: /%s: not a readable dataset", w->path, name);
    goto out;
  }
  H5D_layout_t layout = H5Pget_layout(dcpl);
  int ext = H5Pget_external_count(dcpl), nf = H5Pget_nfilters(dcpl);
  if (layout == H5D_VIRTUAL) {
    snprintf(w->err, w->eb, "%s: /%s: a virtual dataset (its data lives in other files); "
             "model files must be self-contained", w->path, name);
  } else if (ext != 0) {
    snprintf(w->err, w->eb, "%s: /%s: external raw storage (%d file%s outside the HDF5 file); "
             "model files must be self-contained", w->path, name, ext, ext == 1 ? "" : "s");
  } else if (nf != 0) {
    unsigned flags = 0;
    size_t nv = 0;
    char fname[64] = "";
    H5Z_filter_t id = H5Pget_filter2(dcpl, 0, &flags, &nv, NULL, sizeof fname, fname, NULL);
    snprintf(w->err, w->eb, "%s: /%s: filter %d ('%s'): tfdist writes no filters, so refuses "
             "them", w->path, name, (int)id, h5_is_ascii_name(fname) ? fname : "?");
  } else if (layout != H5D_CONTIGUOUS && layout != H5D_COMPACT && layout != H5D_CHUNKED) {
    snprintf(w->err, w->eb, "%s: /%s: unknown storage layout %d", w->path, name, (int)layout);
  } else {
    rc = 0;
  }
out:
  H5Eclear2(H5E_DEFAULT);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (d >= 0) H5Dclose(d);
  return rc;
}

static herr_t h5_walk_link(hid_t group, const char *name, const H5L_info_t *info, void *data) {
  h5_walk *w = data;
  const char *shown = h5_is_ascii_name(name) ? name : "(unprintable name)";
  if (++w->links > H5_MAX_LINKS) {
    snprintf(w->err, w->eb, "%s: more than %d objects; not a tfdist model", w->path,
             H5_MAX_LINKS);
    return -1;
  }
  if (info->type != H5L_TYPE_HARD) {
    snprintf(w->err, w->eb, "%s: /%s: %s link; model files hold hard links only", w->path, shown,
             info->type == H5L_TYPE_SOFT ? "a soft" : info->type == H5L_TYPE_EXTERNAL ?
             "an external" : "a user-defined");
    return -1;
  }
  H5O_info_t oi;
  if (H5Oget_info_by_name2(group, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
    h5_fail(w->err, w->eb, "%s: /%s: unreadable object", w->path, shown);
    return -1;
  }
  if (oi.type == H5O_TYPE_DATASET && h5_check_dataset(group, name, w) != 0) return -1;
  return 0;
}

int h5_file_check_plain(hid_t file, const char *path, char *err, size_t eb) {
  h5_walk w = {path, err, eb, 0};
  err[0] = '\0';
  herr_t rc = H5Lvisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, h5_walk_link, &w);
  if (rc < 0 && !err[0]) h5_fail(err, eb, "%s: cannot list its objects (damaged file?)", path);
  H5Eclear2(H5E_DEFAULT);
  return rc < 0 ? -1 : 0;
}

hid_t h5_open_read(const char *path, char *err, size_t eb) {
  struct stat st;
  h5_quiet();
  if (stat(path, &st) != 0) {
    snprintf(err, eb, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, eb, "%s: not a regular file", path);
    return -1;
  }
  htri_t is = H5Fis_hdf5(path);
  if (is <= 0) {
    H5Eclear2(H5E_DEFAULT);
    snprintf(err, eb, "%s: not an HDF5 file (no HDF5 signature)", path);
    return -1;
  }
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    h5_fail(err, eb, "%s: cannot open: truncated or damaged HDF5 file", path);
    return -1;
  }
  if (h5_file_check_plain(f, path, err, eb) != 0) {
    H5Fclose(f);
    return -1;
  }
  return f;
}

/* The file's bytes, built by HDF5 in memory (the core driver, no backing
 * store): *image is malloc'd. */
static int h5_build_image(h5_file_writer write, const void *ctx, void **image, size_t *bytes,
                          char *err, size_t eb) {
  hid_t fapl = -1, f = -1;
  int rc = -1;
  *image = NULL;
  h5_quiet();
  H5_CHECK(fapl = H5Pcreate(H5P_FILE_ACCESS), err, eb, out);
  H5_CHECK(H5Pset_fapl_core(fapl, (size_t)1 << 20, 0), err, eb, out);
  H5_CHECK(f = H5Fcreate("tfdist-image", H5F_ACC_TRUNC, H5P_DEFAULT, fapl), err, eb, out);
  if (write(f, ctx, err, eb) != 0) goto out;
  H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL), err, eb, out);
  ssize_t n = 0;
  H5_CHECK(n = H5Fget_file_image(f, NULL, 0), err, eb, out);
  if (!(*image = malloc(n > 0 ? (size_t)n : 1))) {
    snprintf(err, eb, "out of memory for a %lld-byte HDF5 file", (long long)n);
    goto out;
  }
  H5_CHECK(H5Fget_file_image(f, *image, (size_t)n), err, eb, out);
  *bytes = (size_t)n;
  rc = 0;
out:
  if (f >= 0 && H5Fclose(f) < 0 && rc == 0) {
    h5_error_line(err, eb, "H5Fclose", __FILE__, __LINE__);
    rc = -1;
  }
  if (fapl >= 0) H5Pclose(fapl);
  if (rc != 0) {
    free(*image);
    *image = NULL;
  }
  return rc;
}

/* HDF5 builds the file in memory and we write its bytes ourselves: a full
 * disk is then a write error naming the file, never an HDF5 flush that fails
 * half way (HDF5 1.10 then crashes at exit closing that file again). The temp
 * file exists from the start, as with any save in progress. */
int h5_file_write_atomic(const char *path, h5_file_writer write, const void *ctx,
                         void (*before_commit)(void), char *err, size_t eb) {
  char tmp[4200];
  void *image = NULL;
  size_t bytes = 0;
  int fd = fs_tmp_create(path, tmp, sizeof tmp, err, eb);
  if (fd < 0) return -1;
  int rc = h5_build_image(write, ctx, &image, &bytes, err, eb);
  if (rc == 0) rc = fs_write_fd(fd, tmp, image, bytes, err, eb);
  if (close(fd) != 0 && rc == 0) {
    snprintf(err, eb, "%s: close: %s", tmp, strerror(errno));
    rc = -1;
  }
  free(image);
  if (before_commit) before_commit();
  if (rc != 0) {
    unlink(tmp);
    return -1;
  }
  return fs_commit(tmp, path, err, eb);
}

static hid_t h5_str_type(size_t len) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0) return t;
  if (H5Tset_size(t, len ? len : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0 ||
      H5Tset_cset(t, H5T_CSET_ASCII) < 0) {
    H5Tclose(t);
    return -1;
  }
  return t;
}

/* One scalar fixed-length string under obj: an attribute, or a dataset
 * (HDF5 splits the two into H5A and H5D calls of the same shape). */
static int h5_scalar_str_write(hid_t obj, const char *name, const char *value, int dataset,
                               char *err, size_t eb) {
  int rc = -1;
  hid_t t = -1, s = -1, o = -1;
  H5_CHECK(t = h5_str_type(strlen(value)), err, eb, out);
  H5_CHECK(s = H5Screate(H5S_SCALAR), err, eb, out);
  if (dataset) {
    H5_CHECK(o = H5Dcreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
    H5_CHECK(H5Dwrite(o, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, value), err, eb, out);
  } else {
    H5_CHECK(o = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
    H5_CHECK(H5Awrite(o, t, value), err, eb, out);
  }
  rc = 0;
out:
  if (o >= 0 && dataset) H5Dclose(o);
  if (o >= 0 && !dataset) H5Aclose(o);
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  return rc;
}

int h5_attr_write_str(hid_t obj, const char *name, const char *value, char *err, size_t eb) {
  return h5_scalar_str_write(obj, name, value, 0, err, eb);
}

int h5_attr_write_str_array(hid_t obj, const char *name, const char *const *values, int n,
                            char *err, size_t eb) {
  size_t width = 1;
  for (int i = 0; i < n; i++) width = strlen(values[i]) > width ? strlen(values[i]) : width;
  char *buf = calloc((size_t)(n ? n : 1), width);
  int rc = -1;
  hid_t t = -1, s = -1, a = -1;
  hsize_t dim = (hsize_t)n;
  if (!buf) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * width, values[i], strlen(values[i]));
  H5_CHECK(t = h5_str_type(width), err, eb, out);
  H5_CHECK(s = H5Screate_simple(1, &dim, NULL), err, eb, out);
  H5_CHECK(a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  H5_CHECK(H5Awrite(a, t, buf), err, eb, out);
  rc = 0;
out:
  if (a >= 0) H5Aclose(a);
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  free(buf);
  return rc;
}

static int h5_attr_write_num(hid_t obj, const char *name, hid_t file_type, hid_t mem_type,
                             const void *value, char *err, size_t eb) {
  int rc = -1;
  hid_t s = -1, a = -1;
  H5_CHECK(s = H5Screate(H5S_SCALAR), err, eb, out);
  H5_CHECK(a = H5Acreate2(obj, name, file_type, s, H5P_DEFAULT, H5P_DEFAULT), err, eb, out);
  H5_CHECK(H5Awrite(a, mem_type, value), err, eb, out);
  rc = 0;
out:
  if (a >= 0) H5Aclose(a);
  if (s >= 0) H5Sclose(s);
  return rc;
}

int h5_attr_write_i64(hid_t obj, const char *name, int64_t value, char *err, size_t eb) {
  return h5_attr_write_num(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, err, eb);
}

int h5_attr_write_f64(hid_t obj, const char *name, double value, char *err, size_t eb) {
  return h5_attr_write_num(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, err, eb);
}

int h5_attr_exists(hid_t obj, const char *name) { return H5Aexists(obj, name) > 0; }

/* Opens attribute name of class want (H5T_STRING, H5T_INTEGER, H5T_FLOAT) with
 * n elements (1 for scalar; *n receives the count when n_out). */
static hid_t h5_attr_open_checked(hid_t obj, const char *name, const char *where,
                                  H5T_class_t want, hssize_t *n_out, hid_t *type_out,
                                  char *err, size_t eb) {
  if (H5Aexists(obj, name) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    snprintf(err, eb, "%s: attribute '%s' is missing", where, name);
    return -1;
  }
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = -1, s = -1;
  if (a < 0 || (t = H5Aget_type(a)) < 0 || (s = H5Aget_space(a)) < 0) goto bad;
  int nd = H5Sget_simple_extent_ndims(s);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  if (H5Tget_class(t) != want || nd < 0 || nd > 1 || n < 0 || (!n_out && n != 1)) {
    snprintf(err, eb, "%s: attribute '%s' has the wrong type or shape", where, name);
    goto fail;
  }
  H5Sclose(s);
  if (n_out) *n_out = n;
  *type_out = t;
  return a;
bad:
  h5_fail(err, eb, "%s: attribute '%s' unreadable", where, name);
fail:
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  if (a >= 0) H5Aclose(a);
  return -1;
}

int h5_is_ascii_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 255) return 0;
  for (; *s; s++) {
    if (*s < 0x20 || *s > 0x7e) return 0;
  }
  return 1;
}

static int h5_has_control(const char *s) {
  for (; *s; s++) {
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
  }
  return 0;
}

/* Reads n strings of attribute a (type t) into malloc'd copies. */
static int h5_attr_read_strings(hid_t a, hid_t t, hssize_t n, char **out, const char *where,
                                const char *name, char *err, size_t eb) {
  int rc = -1;
  hid_t mt = -1;
  htri_t var = H5Tis_variable_str(t);
  if (var < 0) goto bad;
  if (var) {
    char **ptrs = calloc((size_t)(n ? n : 1), sizeof *ptrs);
    if (!ptrs || (mt = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 ||
        H5Aread(a, mt, ptrs) < 0) {
      free(ptrs);
      goto bad;
    }
    rc = 0;
    for (hssize_t i = 0; i < n; i++) {
      out[i] = strdup(ptrs[i] ? ptrs[i] : "");
      if (!out[i]) rc = -1;
      H5free_memory(ptrs[i]);
    }
    free(ptrs);
    if (rc != 0) snprintf(err, eb, "out of memory");
  } else {
    size_t width = H5Tget_size(t);
    char *buf = calloc((size_t)(n ? n : 1), width + 1);
    if (!buf || (mt = H5Tcopy(t)) < 0 || H5Aread(a, mt, buf) < 0) {
      free(buf);
      goto bad;
    }
    rc = 0;
    for (hssize_t i = 0; i < n; i++) {
      out[i] = strndup(buf + (size_t)i * width, width);
      if (!out[i]) rc = -1;
    }
    free(buf);
    if (rc != 0) snprintf(err, eb, "out of memory");
  }
  if (mt >= 0) H5Tclose(mt);
  for (hssize_t i = 0; rc == 0 && i < n; i++) {
    if (h5_has_control(out[i])) {
      snprintf(err, eb, "%s: attribute '%s' contains control characters (damaged file?)", where,
               name);
      rc = -1;
    }
  }
  return rc;
bad:
  h5_fail(err, eb, "%s: attribute '%s' unreadable", where, name);
  if (mt >= 0) H5Tclose(mt);
  return -1;
}

int h5_attr_read_str(hid_t obj, const char *name, const char *where, char **out, char *err,
                     size_t eb) {
  hid_t t = -1;
  *out = NULL;
  hid_t a = h5_attr_open_checked(obj, name, where, H5T_STRING, NULL, &t, err, eb);
  if (a < 0) return -1;
  int rc = h5_attr_read_strings(a, t, 1, out, where, name, err, eb);
  H5Tclose(t);
  H5Aclose(a);
  return rc;
}

int h5_attr_read_str_array(hid_t obj, const char *name, const char *where, char ***out, int *n,
                           char *err, size_t eb) {
  hid_t t = -1;
  hssize_t count = 0;
  *out = NULL;
  *n = 0;
  hid_t a = h5_attr_open_checked(obj, name, where, H5T_STRING, &count, &t, err, eb);
  if (a < 0) return -1;
  int rc = -1;
  char **arr = NULL;
  if (count > 4096) {
    snprintf(err, eb, "%s: attribute '%s' has %lld entries, too many", where, name,
             (long long)count);
    goto out;
  }
  arr = calloc((size_t)(count ? count : 1), sizeof *arr);
  if (!arr) {
    snprintf(err, eb, "out of memory");
    goto out;
  }
  rc = h5_attr_read_strings(a, t, count, arr, where, name, err, eb);
  if (rc != 0) {
    h5_str_array_free(arr, (int)count);
    arr = NULL;
  }
out:
  H5Tclose(t);
  H5Aclose(a);
  *out = arr;
  *n = rc == 0 ? (int)count : 0;
  return rc;
}

void h5_str_array_free(char **a, int n) {
  if (!a) return;
  for (int i = 0; i < n; i++) free(a[i]);
  free(a);
}

static int h5_attr_read_num(hid_t obj, const char *name, const char *where, H5T_class_t cls,
                            hid_t mem_type, void *out, char *err, size_t eb) {
  hid_t t = -1;
  hid_t a = h5_attr_open_checked(obj, name, where, cls, NULL, &t, err, eb);
  if (a < 0) return -1;
  int rc = 0;
  if (H5Aread(a, mem_type, out) < 0) {
    h5_fail(err, eb, "%s: attribute '%s' unreadable", where, name);
    rc = -1;
  }
  H5Tclose(t);
  H5Aclose(a);
  return rc;
}

int h5_attr_read_i64(hid_t obj, const char *name, const char *where, int64_t *out, char *err,
                     size_t eb) {
  return h5_attr_read_num(obj, name, where, H5T_INTEGER, H5T_NATIVE_INT64, out, err, eb);
}

int h5_attr_read_f64(hid_t obj, const char *name, const char *where, double *out, char *err,
                     size_t eb) {
  return h5_attr_read_num(obj, name, where, H5T_FLOAT, H5T_NATIVE_DOUBLE, out, err, eb);
}

int h5_dataset_write_f32(hid_t group, const char *name, const float *data, int64_t rows,
                         int64_t cols, char *err, size_t eb) {
  hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
  int rc = -1;
  hid_t s = -1, d = -1;
  H5_CHECK(s = H5Screate_simple(cols ? 2 : 1, dims, NULL), err, eb, out);
  H5_CHECK(d = H5Dcreate2(group, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
           err, eb, out);
  H5_CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), err, eb, out);
  rc = 0;
out:
  if (d >= 0) H5Dclose(d);
  if (s >= 0) H5Sclose(s);
  return rc;
}

/* Every prefix of a relative path must exist before HDF5 may look further. */
static int h5_path_exists(hid_t group, const char *path) {
  char buf[1024];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf || buf[0] == '/') return 0;
  for (char *p = buf;; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (H5Lexists(group, buf, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
      }
      *p = c;
      if (c == '\0') return 1;
    }
  }
}

static hid_t h5_dataset_open(hid_t group, const char *name, const char *where, char *err,
                             size_t eb) {
  if (!h5_path_exists(group, name)) {
    snprintf(err, eb, "%s/%s: dataset is missing", where, name);
    return -1;
  }
  hid_t d = h5_open_closed(group, name, 1);
  if (d < 0) h5_fail(err, eb, "%s/%s: not a readable dataset", where, name);
  return d;
}

int h5_dataset_shape(hid_t group, const char *name, const char *where, int *rank,
                     int64_t dims[2], char *err, size_t eb) {
  hid_t d = h5_dataset_open(group, name, where, err, eb), s = -1, t = -1;
  if (d < 0) return -1;
  int rc = -1;
  hsize_t hd[H5S_MAX_RANK];
  if ((t = H5Dget_type(d)) < 0 || (s = H5Dget_space(d)) < 0) {
    h5_fail(err, eb, "%s/%s: unreadable", where, name);
    goto out;
  }
  if (H5Tget_class(t) != H5T_FLOAT) {
    snprintf(err, eb, "%s/%s: not a floating-point dataset", where, name);
    goto out;
  }
  int nd = H5Sget_simple_extent_dims(s, hd, NULL);
  if (nd < 1 || nd > 2) {
    snprintf(err, eb, "%s/%s: rank %d, expected 1 or 2", where, name, nd);
    goto out;
  }
  *rank = nd;
  dims[0] = (int64_t)hd[0];
  dims[1] = nd == 2 ? (int64_t)hd[1] : 0;
  rc = 0;
out:
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  H5Dclose(d);
  return rc;
}

int h5_dataset_read_f32(hid_t group, const char *name, const char *where, float *out,
                        int64_t elems, char *err, size_t eb) {
  hid_t d = h5_dataset_open(group, name, where, err, eb), s = -1;
  if (d < 0) return -1;
  int rc = -1;
  if ((s = H5Dget_space(d)) < 0 || H5Sget_simple_extent_npoints(s) != elems) {
    snprintf(err, eb, "%s/%s: expected %lld elements", where, name, (long long)elems);
    goto out;
  }
  if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    h5_fail(err, eb, "%s/%s: read failed (truncated or damaged file?)", where, name);
    goto out;
  }
  rc = 0;
out:
  if (s >= 0) H5Sclose(s);
  H5Dclose(d);
  return rc;
}

int h5_dataset_write_text(hid_t group, const char *name, const char *text, char *err, size_t eb) {
  return h5_scalar_str_write(group, name, text, 1, err, eb);
}

int h5_dataset_read_text(hid_t group, const char *name, const char *where, char **out,
                         char *err, size_t eb) {
  *out = NULL;
  hid_t d = h5_dataset_open(group, name, where, err, eb), t = -1, s = -1;
  if (d < 0) return -1;
  int rc = -1;
  char *buf = NULL;
  size_t width = 0;
  if ((t = H5Dget_type(d)) < 0 || (s = H5Dget_space(d)) < 0 || H5Tget_class(t) != H5T_STRING ||
      H5Tis_variable_str(t) != 0 || H5Sget_simple_extent_npoints(s) != 1) {
    H5Eclear2(H5E_DEFAULT);
    snprintf(err, eb, "%s/%s: not a fixed-length string", where, name);
    goto out;
  }
  width = H5Tget_size(t);
  if (width > ((size_t)1 << 30) || !(buf = calloc(1, width + 1))) {
    snprintf(err, eb, "%s/%s: %zu bytes, too large", where, name, width);
    goto out;
  }
  if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
    h5_fail(err, eb, "%s/%s: read failed", where, name);
    free(buf);
    buf = NULL;
    goto out;
  }
  rc = 0;
out:
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  H5Dclose(d);
  *out = buf;
  return rc;
}

hid_t h5_group_open(hid_t parent, const char *name, const char *where, char *err, size_t eb) {
  if (!h5_path_exists(parent, name)) {
    snprintf(err, eb, "%s: group '%s' is missing", where, name);
    return -1;
  }
  hid_t g = h5_open_closed(parent, name, 0);
  if (g < 0) h5_fail(err, eb, "%s: '%s' is not a readable group", where, name);
  return g;
}
