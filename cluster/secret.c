/* The job's secret for the TF_CONFIG mesh's hello (tcp_auth.c), and the
 * rule that a cluster reaching past loopback must have one. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/env.h"
#include "cluster/tfconfig.h"

int cluster_tf_host_is_loopback(const char *host) {
  struct in_addr a4;
  struct in6_addr a6;
  if (strcasecmp(host, "localhost") == 0) return 1;
  if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) return a6.s6_addr[12] == 127;
  }
  return 0; /* any other name may resolve anywhere */
}

/* The secret file's bytes into tf; its mode and kind are checked on the
 * open descriptor, so a swap between check and read cannot slip by. */
static int secret_read_file(cluster_tf_config *tf, const char *path, char *err, size_t err_bytes) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(err, err_bytes, "--secret-file %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  const char *why = !S_ISREG(st.st_mode)                 ? "not a regular file"
                    : (st.st_mode & (S_IRWXG | S_IRWXO)) ? "its group or others may read it (chmod 600)"
                    : st.st_size > CLUSTER_SECRET_MAX     ? "larger than 1024 bytes"
                                                          : NULL;
  ssize_t got = 0;
  if (!why) {
    size_t at = 0;
    while (at < CLUSTER_SECRET_MAX && (got = read(fd, tf->secret + at, CLUSTER_SECRET_MAX - at)) > 0) {
      at += (size_t)got;
    }
    tf->secret_bytes = at;
    if (got < 0) why = strerror(errno);
  }
  close(fd);
  /* One trailing newline (echo > file) is not part of the secret. */
  if (!why && tf->secret_bytes && tf->secret[tf->secret_bytes - 1] == '\n') tf->secret_bytes--;
  if (!why && tf->secret_bytes < CLUSTER_SECRET_MIN) why = "shorter than 16 bytes";
  if (!why) return 0;
  explicit_bzero(tf->secret, sizeof tf->secret);
  tf->secret_bytes = 0;
  snprintf(err, err_bytes, "--secret-file %s: %s", path, why);
  return -1;
}

int cluster_tf_config_secure(cluster_tf_config *tf, const char *secret_file, int insecure,
                             char *err, size_t err_bytes) {
  tf->secret_bytes = 0;
  if (secret_file && secret_file[0]) {
    if (secret_read_file(tf, secret_file, err, err_bytes) != 0) return -1;
  } else {
    const char *env = base_env_str("TFDIST_SECRET");
    size_t n = env ? strlen(env) : 0;
    if (env && (n < CLUSTER_SECRET_MIN || n > CLUSTER_SECRET_MAX)) {
      snprintf(err, err_bytes, "TFDIST_SECRET: %zu bytes; it must hold %d to %d", n,
               CLUSTER_SECRET_MIN, CLUSTER_SECRET_MAX);
      return -1;
    }
    memcpy(tf->secret, env ? env : "", n);
    tf->secret_bytes = n;
  }
  if (tf->secret_bytes || insecure) return 0;
  for (int k = 0; k < tf->ntasks; k++) {
    const cluster_tf_task *t = &tf->tasks[k];
    if (cluster_tf_host_is_loopback(t->host)) continue;
    snprintf(err, err_bytes, "TF_CONFIG: %s %d's address %s is not loopback and no secret is set: "
             "set TFDIST_SECRET (the same on every task) or --secret-file, or accept anyone who "
             "can reach the ports with --insecure-cluster", cluster_tf_type_name(t->type), t->index,
             t->host);
    return -1;
  }
  return 0;
}
