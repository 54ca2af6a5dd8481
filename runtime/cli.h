/* Subcommands of the tfdist binary. Each returns the process exit code;
 * only these (and main) print errors and choose exit codes. */
#ifndef TFDIST_RUNTIME_CLI_H
#define TFDIST_RUNTIME_CLI_H

/* argv[0] is the subcommand word. */
int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_predict(int argc, char **argv);
int cli_model(int argc, char **argv);

/* Exit codes: 0 ok, 1 runtime failure, 2 bad input (flag, config, file). */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

#endif
