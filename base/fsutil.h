/* Files that survive crashes: write to a temp name, fsync, rename, fsync the
 * folder. A reader sees the old file or the new one, never half of one. */
#ifndef TFDIST_BASE_FSUTIL_H
#define TFDIST_BASE_FSUTIL_H

#include <stddef.h>
#include <stdio.h>

int fs_mkdirs(const char *path, char *err, size_t err_bytes);
/* A fresh temp file next to final (so the rename stays on one file system),
 * "<final>.tmp.<pid>.XXXXXX" from mkostemp: O_CREAT|O_EXCL, so never opened
 * through a planted link or over another file; O_CLOEXEC; mode 0644.
 * Returns its fd, with its name in tmp, or -1 with err naming final. */
int fs_tmp_create(const char *final, char *tmp, size_t tmp_bytes, char *err, size_t err_bytes);
/* Opens path for appending, locking or (O_TRUNC) rewriting in place, with
 * flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC: a symbolic link, or anything but a
 * regular file with one name (a hard link to someone's file, a FIFO), is a
 * one-line error naming path, and nothing is written. O_TRUNC happens only
 * once that is checked. Returns the fd or -1. */
int fs_open_nofollow(const char *path, int flags, char *err, size_t err_bytes);
/* Removes dir's "<name>.tmp.<pid>[.XXXXXX]" files whose writer is gone (a save killed
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
