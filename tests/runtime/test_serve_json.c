/* serve_json.c and serve_auth.c alone: rows parsed into float32 exactly as
 * strtod reads them; the one-line errors for each kind of bad body; input
 * and signature names; a body parsed from a buffer of exactly its length
 * (ASan sees a read past it); key files and the Bearer check. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "serve/serve_auth.h"
#include "serve/serve_json.h"
#include "tests/check.h"

/* Parses text (copied to a buffer of its exact length) as kind with dim 3. */
static int parse(const char *text, serve_json_kind kind, float **x, int64_t *n, char *err) {
  size_t len = strlen(text);
  char *buf = malloc(len ? len : 1);
  memcpy(buf, text, len);
  int rc = serve_json_rows(buf, len, kind, 3, "dense_input", x, n, err, 512);
  free(buf);
  return rc;
}

static void expect_rows(const char *text, serve_json_kind kind, int64_t rows, const float *want) {
  float *x = NULL;
  int64_t n = -1;
  char err[512] = "";
  int rc = parse(text, kind, &x, &n, err);
  if (rc != 0) fprintf(stderr, "unexpected error for %s: %s\n", text, err);
  CHECK_EQ_INT(rc, 0);
  CHECK_EQ_INT(n, rows);
  for (int64_t i = 0; rc == 0 && i < rows * 3; i++) CHECK(x[i] == want[i]);
  free(x);
}

static void expect_error(const char *text, serve_json_kind kind, const char *needle) {
  float *x = (float *)1;
  int64_t n = -1;
  char err[512] = "";
  int rc = parse(text, kind, &x, &n, err);
  CHECK_EQ_INT(rc, -1);
  CHECK(x == NULL && n == 0);
  if (!err[0] || !strstr(err, needle) || strchr(err, '\n')) {
    fprintf(stderr, "for %s: error '%s' lacks '%s'\n", text, err, needle);
    check_failures++;
  }
}

static void test_rows(void) {
  const float a[] = {0.5f, 1.0f, -2.5e-3f, 3.4028235e38f, 0.0f, 1e-45f};
  expect_rows("{\"data\": [[0.5, 1, -2.5e-3], [3.4028235e+38, 0, 1e-45]]}", SERVE_JSON_SCORE, 2, a);
  expect_rows(" \t\r\n{\"d\\u0061ta\":[[0.5,1,-2.5E-3]]} \n", SERVE_JSON_SCORE, 1, a);
  expect_rows("{\"instances\": [[0.5, 1, -0.0025], {\"dense_input\": [3.4028235e38, 0, 1e-45]}]}",
              SERVE_JSON_PREDICT, 2, a);
  expect_rows("{\"signature_name\": \"serving_default\", \"inputs\": {\"dense_input\": "
              "[[0.5, 1, -0.0025]]}}", SERVE_JSON_PREDICT, 1, a);
  expect_rows("{\"inputs\": [[0.5, 1, -0.0025]], \"signature_name\": \"\"}", SERVE_JSON_PREDICT, 1, a);
  /* 40 rows: the buffer grows past its first 16 */
  char big[4096] = "{\"data\": [";
  float want[120];
  for (int i = 0; i < 40; i++) {
    char row[64];
    snprintf(row, sizeof row, "%s[%d, %d.5, -%d]", i ? "," : "", i, i, i);
    strcat(big, row);
    want[3 * i] = (float)i, want[3 * i + 1] = (float)i + 0.5f, want[3 * i + 2] = (float)-i;
  }
  strcat(big, "]}");
  expect_rows(big, SERVE_JSON_SCORE, 40, want);
}

static void test_errors(void) {
  const serve_json_kind S = SERVE_JSON_SCORE, P = SERVE_JSON_PREDICT;
  expect_error("", S, "empty body");
  expect_error("   ", S, "empty body");
  expect_error("[[1,2,3]]", S, "expected a JSON object");
  expect_error("{\"data\": [[1,2,3]]", S, "ends early");
  expect_error("{\"data\": [[1,2,3]]} x", S, "more after the value");
  expect_error("{\"data\": [[1,2,3]], \"data\": [[1,2,3]]}", S, "body: duplicate key \"data\"");
  expect_error("{\"data\": [[1,2,3]], \"extra\": 1}", S, "unknown key \"extra\"");
  expect_error("{\"dat\": [[1,2,3]]}", S, "\"data\"");
  expect_error("{}", S, "key \"data\": missing");
  expect_error("{\"data\": []}", S, "data: no rows");
  expect_error("{\"data\": {}}", S, "data: expected an array of rows of 3 numbers");
  expect_error("{\"data\": [[1,2]]}", S, "data[0]: 2 values, expected 3");
  expect_error("{\"data\": [[1,2,3], [1,2,3,4]]}", S, "data[1]: 4 values, expected 3");
  expect_error("{\"data\": [[1,2,3], 5]}", S, "data[1]: not an array");
  expect_error("{\"data\": [[1,\"2\",3]]}", S, "data[0][1]: not a number");
  expect_error("{\"data\": [[1,null,3]]}", S, "data[0][1]: not a number");
  expect_error("{\"data\": [[1,2,[3]]]}", S, "data[0][2]: not a number");
  expect_error("{\"data\": [[1,2,1e39]]}", S, "data[0][2]: 1e+39 is outside the float32 range");
  expect_error("{\"data\": [[1,2,-3.5e38]]}", S, "outside the float32 range");
  const char *bad_numbers[] = {"01", "1.", "+1", ".5", "1e", "1e+", "-", "NaN", "Infinity", "1.5.2",
                               "0x10"};
  for (size_t i = 0; i < sizeof bad_numbers / sizeof *bad_numbers; i++) {
    char body[64];
    snprintf(body, sizeof body, "{\"data\": [[1, %s, 3]]}", bad_numbers[i]);
    /* "malformed number", "not a number" (N, +, .) or "not JSON" (0 then x) */
    expect_error(body, S, "");
  }
  char longnum[1200] = "{\"data\": [[1, 0.";
  memset(longnum + strlen(longnum), '1', 1100);
  longnum[16 + 1100] = '\0';
  strcat(longnum, ", 3]]}");
  expect_error(longnum, S, "a number of over 1099 characters");
  expect_error("{\"da\nta\": 1}", S, "not JSON");
  expect_error("{\"data\\x\": 1}", S, "not JSON");
  expect_error("{\"instances\": [[1,2,3]], \"inputs\": [[1,2,3]]}", P, "not both");
  expect_error("{\"instances\": [{\"images\": [1,2,3]}]}", P,
               "instances[0]: input \"images\" is not this model's (its input is \"dense_input\")");
  expect_error("{\"instances\": [{\"dense_input\": [1,2,3], \"b\": [1,2,3]}]}", P,
               "instances[0]: an object row needs exactly one key");
  expect_error("{\"instances\": [[1,2,3], {\"dense_input\": [1,2,3], \"dense_input\": [1,2,3]}]}", P,
               "instances[1]: duplicate key \"dense_input\"");
  expect_error("{\"instances\": [{}]}", P, "instances[0]: an object row needs exactly one key");
  expect_error("{\"inputs\": {\"x\": [[1,2,3]]}}", P, "inputs: input \"x\" is not this model's");
  expect_error("{\"inputs\": {\"dense_input\": [[1,2,3]], \"dense_input\": [[1,2,3]]}}", P,
               "inputs: duplicate key \"dense_input\"");
  expect_error("{\"inputs\": {}}", P, "inputs: an object needs exactly one key");
  expect_error("{\"signature_name\": \"other\", \"instances\": [[1,2,3]]}", P,
               "signature_name \"other\": not found");
  expect_error("{\"signature_name\": 1, \"instances\": [[1,2,3]]}", P, "expected a string");
  expect_error("{\"signature_name\": \"a\", \"instances\": [[1,2,3]], \"signature_name\": \"b\"}", P,
               "body: duplicate key \"signature_name\"");
  expect_error("{\"instances\": [[1,2,3]], \"data\": [[1,2,3]]}", P, "unknown key \"data\"");
  expect_error("{\"rows\": [[1,2,3]]}", P, "unknown key \"rows\"");
  /* a key spelled with a surrogate pair, and one cut at 255 bytes: never a known key */
  expect_error("{\"\\ud83d\\ude00\": 1}", S, "unknown key \"\xf0\x9f\x98\x80\"");
  char longkey[700] = "{\"";
  memset(longkey + 2, 'd', 600);
  longkey[602] = '\0';
  strcat(longkey, "\": 1}");
  expect_error(longkey, S, "unknown key");
}

static void write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  CHECK(fd >= 0);
  CHECK_EQ_INT(write(fd, text, strlen(text)), (long long)strlen(text));
  close(fd);
  chmod(path, mode);
}

static void test_keys(void) {
  char dir[] = "/tmp/tfdist-test-keys-XXXXXX", path[128], err[512];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/keys", dir);
  serve_keys k;
  write_file(path, "# rotate: primary, secondary\nprimary-key-0123456789\n\n  \nsecondary-key-abcdefghij\r\n",
             0600);
  CHECK_EQ_INT(serve_keys_load(&k, path, err, sizeof err), 0);
  CHECK_EQ_INT(k.count, 2);
  CHECK_EQ_INT(serve_keys_check(&k, "Bearer primary-key-0123456789"), 1);
  CHECK_EQ_INT(serve_keys_check(&k, "bearer   secondary-key-abcdefghij  "), 1);
  CHECK_EQ_INT(serve_keys_check(&k, "Bearer primary-key-012345678"), 0);
  CHECK_EQ_INT(serve_keys_check(&k, "Bearer primary-key-01234567890"), 0);
  CHECK_EQ_INT(serve_keys_check(&k, "Bearer # rotate: primary, secondary"), 0);
  CHECK_EQ_INT(serve_keys_check(&k, "Basic primary-key-0123456789"), 0);
  CHECK_EQ_INT(serve_keys_check(&k, "primary-key-0123456789"), 0);
  CHECK_EQ_INT(serve_keys_check(&k, "Bearer "), 0);
  CHECK_EQ_INT(serve_keys_check(&k, NULL), 0);
  chmod(path, 0640);
  CHECK_EQ_INT(serve_keys_load(&k, path, err, sizeof err), -1);
  CHECK(strstr(err, "chmod 600") != NULL && k.count == 0);
  chmod(path, 0604);
  CHECK_EQ_INT(serve_keys_load(&k, path, err, sizeof err), -1);
  write_file(path, "short\n", 0600);
  CHECK_EQ_INT(serve_keys_load(&k, path, err, sizeof err), -1);
  CHECK(strstr(err, ":1: a key of 5 characters") != NULL);
  write_file(path, "a key with spaces in it\n", 0600);
  CHECK_EQ_INT(serve_keys_load(&k, path, err, sizeof err), -1);
  write_file(path, "# only a comment\n\n", 0600);
  CHECK_EQ_INT(serve_keys_load(&k, path, err, sizeof err), -1);
  CHECK(strstr(err, "no keys") != NULL);
  CHECK_EQ_INT(serve_keys_load(&k, dir, err, sizeof err), -1); /* a folder */
  CHECK(strstr(err, "not a regular file") != NULL);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  test_rows();
  test_errors();
  test_keys();
  CHECK_DONE();
}
