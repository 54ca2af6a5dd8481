/* Subcommands of the tfdist binary. Each returns the process exit code;
 * only these (and main) print errors and choose exit codes. */
#ifndef TFDIST_CLI_CLI_H
#define TFDIST_CLI_CLI_H

#include <stddef.h>

/* argv[0] is the subcommand word. */
int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_predict(int argc, char **argv);
int cli_model(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_tune(int argc, char **argv);
/* argv[1] is merge or summary. */
int cli_timeline(int argc, char **argv);
/* argv[1] is the data subcommand: inspect, verify, synth, shard. */
int cli_data(int argc, char **argv);

/* --data-folder left at the built-in default, which is not installed: the
 * flag is then required (SPEC). 0, or -1 with err set. For train and eval. */
int cli_check_default_data(const char *data_folder, char *err, size_t err_bytes);

/* Exit codes: 0 ok, 1 runtime failure, 2 bad input (flag, config, file). */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

#endif
