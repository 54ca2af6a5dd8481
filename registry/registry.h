/* The model registry: a folder tree of immutable, versioned model entries.
 *   <root>/<name>/<version>/model.h5       a copy of the registered file
 *   <root>/<name>/<version>/metadata.json  framework, resources, tags,
 *                                          metrics, source run, sha256
 *   <root>/<name>/.lock                    flock'd while a version is chosen
 * A version is built in a staging folder and renamed into place, so readers
 * never see half an entry, and concurrent registrations of one name get
 * distinct consecutive versions. Root: --registry, else $TFDIST_REGISTRY,
 * else ~/.tfdist/registry. */
#ifndef TFDIST_REGISTRY_REGISTRY_H
#define TFDIST_REGISTRY_REGISTRY_H

#include <cjson/cJSON.h>
#include <stddef.h>

#define REGISTRY_ENV "TFDIST_REGISTRY"
#define REGISTRY_DEFAULT_SUBDIR ".tfdist/registry" /* under $HOME */

typedef struct {
  const char *name;
  const char *path;               /* a model folder (holding model.h5), a model file, or a
                                   * checkpoint (registered with its own epoch's metrics) */
  double cpu, memory_gb;          /* resource configuration */
  const char *const *tags;        /* ntags "key=value" strings */
  int ntags;
  const char *description;        /* may be NULL */
} registry_request;

/* flag (may be NULL or empty) -> env -> default. */
int registry_root(char *out, size_t out_bytes, const char *flag, char *err, size_t err_bytes);
/* 1..128 of [A-Za-z0-9._-], not starting with '.' or '-'. */
int registry_name_valid(const char *name);

/* Copies the model in as the name's next version. *meta receives the entry's
 * metadata (caller frees). */
int registry_register(const char *root, const registry_request *req, cJSON **meta, char *err,
                      size_t err_bytes);
/* Every entry's metadata, by name then version (caller frees the array). */
int registry_list(const char *root, cJSON **entries, char *err, size_t err_bytes);
/* ref is NAME (its newest version) or NAME:VERSION. dir (optional) receives
 * the entry's folder. */
int registry_show(const char *root, const char *ref, cJSON **meta, char *dir, size_t dir_bytes,
                  char *err, size_t err_bytes);
/* Copies the entry's model.h5 and metadata.json into folder to, verifying the
 * model's sha256 against the metadata as it copies. */
int registry_download(const char *root, const char *ref, const char *to, cJSON **meta,
                      char *err, size_t err_bytes);

/* The versions of name, ascending (caller frees); an error when there are none. */
int registry_versions(const char *root, const char *name, long long **versions, int *n, char *err,
                      size_t err_bytes);
/* ref's model.h5 (path), checked against the sha256 its metadata records, so
 * a modified or damaged entry is never served; *version receives its version. */
int registry_model_file(const char *root, const char *ref, char *path, size_t path_bytes,
                        long long *version, char *err, size_t err_bytes);

#endif
