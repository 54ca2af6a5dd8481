/* sha256 against FIPS 180-4 examples and Python hashlib digests of a byte
 * pattern at every padding boundary, one-shot and fed in uneven pieces. */
#include <string.h>

#include "base/sha256.h"
#include "tests/check.h"

static const struct { int len; const char *hex; } pattern_vectors[] = {
  /* hashlib.sha256(bytes((i*7+3)&255 for i in range(len))).hexdigest() */
  {0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
  {1, "084fed08b978af4d7d196a7446a86b58009e636b611db16211b65a9aadff29c5"},
  {3, "6ab0dba1f4f1dfbb37b4f9eeb092c09fca4900ad32bdcd147d8dde35d6c87c35"},
  {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
  {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
  {57, "35df609437dcfea3279283ab79fd554e2bf78f8f7ae2de532d8ee300b09e8f73"},
  {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
  {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
  {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
  {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
  {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
  {127, "a8d23e75d936f303d248888d9b165ee543f4cbafcad3c9dd2a79bd84faa11d07"},
  {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
  {129, "307f8fc2c1622b92762e818d39a185d4d667ad49a4b07ceae1f4afa008a93ec4"},
  {1000, "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371"},
};

static void check_hex(const char *what, const char *got, const char *want) {
  if (strcmp(got, want) != 0) {
    fprintf(stderr, "%s: got %s want %s\n", what, got, want);
    check_failures++;
  }
}

int main(void) {
  char hex[SHA256_HEX_BYTES];
  sha256_hex("abc", 3, hex);
  check_hex("abc", hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  sha256_hex(m448, strlen(m448), hex);
  check_hex("448-bit", hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

  static unsigned char buf[1000];
  for (int i = 0; i < 1000; i++) buf[i] = (unsigned char)((i * 7 + 3) & 255);
  for (size_t v = 0; v < sizeof pattern_vectors / sizeof pattern_vectors[0]; v++) {
    const int len = pattern_vectors[v].len;
    char what[64];
    snprintf(what, sizeof what, "pattern len %d one-shot", len);
    sha256_hex(buf, (size_t)len, hex);
    check_hex(what, hex, pattern_vectors[v].hex);
    /* Uneven pieces: 1, 2, 3, ... bytes, crossing block edges at odd places. */
    sha256_ctx c;
    sha256_init(&c);
    for (int off = 0, piece = 1; off < len; off += piece, piece++) {
      sha256_update(&c, buf + off, (size_t)(len - off < piece ? len - off : piece));
    }
    sha256_final_hex(&c, hex);
    snprintf(what, sizeof what, "pattern len %d in pieces", len);
    check_hex(what, hex, pattern_vectors[v].hex);
  }

  /* One million 'a' in 1000-byte updates (FIPS 180-2 appendix B.3). */
  sha256_ctx c;
  memset(buf, 'a', sizeof buf);
  sha256_init(&c);
  for (int i = 0; i < 1000; i++) sha256_update(&c, buf, 1000);
  sha256_final_hex(&c, hex);
  check_hex("million a", hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  CHECK_DONE();
}
