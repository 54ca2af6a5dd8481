/* Files that survive crashes: write to a temp name, fsync, rename, fsync the
 * folder. A reader sees the old file or the new one, never half of one. */
#ifndef TFDIST_BASE_FSUTIL_H
#define TFDIST_BASE_FSUTIL_H

#include <stddef.h>
#include <stdio.h>

int fs_mkdirs(const char *path, char *err, size_t err_bytes);
/* "<final>.tmp.<pid>" next to final, so the rename stays on one file system. */
void fs_tmp_path(char *out, size_t out_bytes, const char *final);
/* Removes dir's "<name>.tmp.<pid>" files whose writer is gone (a save killed
 * mid-write), for the names ours(name) accepts: a user's own files in the
 * folder are never touched. A missing dir is fine. */
void fs_remove_stale_tmp(const char *dir, int (*ours)(const char *name));
/* fsync tmp, rename it over final, fsync final's folder. */
int fs_commit(const char *tmp, const char *final, char *err, size_t err_bytes);
int fs_write_atomic(const char *path, const void *data, size_t len, char *err, size_t err_bytes);
/* All len bytes to an open fd (name for messages): a short write or an error
 * (a full disk) is one line naming the file and the reason. */
int fs_write_fd(int fd, const char *name, const void *data, size_t len, char *err,
                size_t err_bytes);
/* Whole file into a NUL-terminated buffer (caller frees). */
char *fs_read_all(const char *path, size_t *len, char *err, size_t err_bytes);
/* The rest of an open stream (stdin too); name is used in messages. */
char *fs_read_stream(FILE *f, const char *name, size_t *len, char *err, size_t err_bytes);

#endif
