/* Test helper: runs the rest of a test as a TF_CONFIG cluster of n training
 * tasks (chief + workers) on 127.0.0.1, each a forked child with its own
 * TF_CONFIG, the way a cluster manager starts them. */
#ifndef TFDIST_TESTS_TF_SPAWN_H
#define TFDIST_TESTS_TF_SPAWN_H

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* A port the kernel had free a moment ago. */
static int tf_spawn_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    perror("tf_spawn: socket");
    exit(1);
  }
  close(fd);
  return ntohs(a.sin_port);
}

/* In the parent: forks n children and returns only in them (with TF_CONFIG
 * set); the parent waits for all, at most limit_s, and exits with the first
 * non-zero status (a child killed by the limit counts as 1). The tasks are
 * spread over `hosts` loopback addresses (127.0.0.1, .2, ...), task k on
 * 127.0.0.(1 + k * hosts / n): hosts of their own by the host part of the
 * address, as a node grouping sees them. */
static void tf_spawn_cluster_hosts(int n, int hosts, int limit_s) {
  char cluster[4096];
  int at = snprintf(cluster, sizeof cluster, "{\"chief\": [\"127.0.0.1:%d\"]", tf_spawn_free_port());
  for (int k = 1; k < n; k++) {
    at += snprintf(cluster + at, sizeof cluster - (size_t)at, "%s\"127.0.0.%d:%d\"",
                   k == 1 ? ", \"worker\": [" : ", ", 1 + k * hosts / n, tf_spawn_free_port());
  }
  snprintf(cluster + at, sizeof cluster - (size_t)at, "%s}", n > 1 ? "]" : "");
  pid_t pids[64];
  for (int k = 0; k < n && k < 64; k++) {
    char conf[4400];
    snprintf(conf, sizeof conf, "{\"cluster\": %s, \"task\": {\"type\": \"%s\", \"index\": %d}}",
             cluster, k ? "worker" : "chief", k ? k - 1 : 0);
    fflush(NULL);
    pids[k] = fork();
    if (pids[k] == 0) {
      setenv("TF_CONFIG", conf, 1);
      alarm((unsigned)limit_s);
      return;
    }
  }
  int worst = 0;
  for (int k = 0; k < n && k < 64; k++) {
    int st = 0;
    waitpid(pids[k], &st, 0);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    if (code && !worst) {
      fprintf(stderr, "tf_spawn: task %d ended with %s %d\n", k,
              WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? code : WTERMSIG(st));
      worst = code;
    }
  }
  exit(worst);
}

static void tf_spawn_cluster(int n, int limit_s) { tf_spawn_cluster_hosts(n, 1, limit_s); }

#endif
