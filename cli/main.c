/* The tfdist binary: subcommand dispatch, --version and --check-build. */
#include <stdio.h>
#include <string.h>

#include "train/buildinfo.h"
#include "cli/cli.h"
#include "tfdist_config.h"

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} cli_command;

static const cli_command commands[] = {
  {"train", cli_train, "train the DNN (one rank, or many under mpirun/srun)"},
  {"eval", cli_eval, "accuracy, loss, per-class accuracy and confusion matrix of a saved model"},
  {"predict", cli_predict, "classes and probabilities of a saved model for idx or JSON input"},
  {"tune", cli_tune, "hyperparameter search: random sampling, bandit early termination"},
  {"serve", cli_serve, "HTTP scoring server: /score and TF Serving REST predict"},
  {"model", cli_model, "model registry: register, list, show, download"},
  {"data", cli_data, "inspect, verify, synthesize or shard idx data sets"},
  {"timeline", cli_timeline, "merge or summarize the step timelines of train --timeline on"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: tfdist <command> [flags]   (tfdist <command> --help for its flags)\n\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  }
  fprintf(out, "\n  --version      print the version\n");
  fprintf(out, "  --check-build  print what was compiled in, with library versions\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return CLI_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--version")) {
    printf("tfdist %s\n", TFDIST_VERSION);
    return CLI_OK;
  }
  if (!strcmp(cmd, "--check-build")) {
    buildinfo_print(stdout);
    return CLI_OK;
  }
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return CLI_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  }
  fprintf(stderr, "tfdist: error: unknown command '%s' (see tfdist --help)\n", cmd);
  return CLI_USAGE;
}
