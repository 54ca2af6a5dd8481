/* Where train/ takes the back ends' and collectives' error strings into its
 * one error type. */
#include "train/train_state.h"

int train_err_backend(base_err *e, const kern_backend *be) {
  return base_err_set(e, "%s", kern_error(be));
}

int train_err_coll(base_err *e, coll_comm *comm) {
  return base_err_set(e, "%s", coll_comm_error(comm));
}
