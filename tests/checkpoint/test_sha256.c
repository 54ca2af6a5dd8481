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

/* RFC 4231 section 4: HMAC-SHA-256 test cases 1-4, 6 and 7 (5 is truncated). */
static void check_hmac(void) {
  uint8_t k20[20], aa131[131], k25[25], dd50[50], cd50[50], mac[32];
  char hex[SHA256_HEX_BYTES];
  memset(k20, 0x0b, sizeof k20);
  memset(aa131, 0xaa, sizeof aa131);
  memset(dd50, 0xdd, sizeof dd50);
  memset(cd50, 0xcd, sizeof cd50);
  for (int i = 0; i < 25; i++) k25[i] = (uint8_t)(i + 1);
  const char *t6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  const char *t7 = "This is a test using a larger than block-size key and a larger than block-size "
                   "data. The key needs to be hashed before being used by the HMAC algorithm.";
  const struct { const char *what; const void *key; size_t kb; const void *msg; size_t mb;
                 const char *hex; } v[] = {
    {"rfc4231 case 1", k20, 20, "Hi There", 8,
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    {"rfc4231 case 2", "Jefe", 4, "what do ya want for nothing?", 28,
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {"rfc4231 case 3", aa131, 20, dd50, 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
    {"rfc4231 case 4", k25, 25, cd50, 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
    {"rfc4231 case 6", aa131, 131, t6, strlen(t6),
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    {"rfc4231 case 7", aa131, 131, t7, strlen(t7),
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    sha256_hmac(v[i].key, v[i].kb, v[i].msg, v[i].mb, mac);
    for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", mac[j]);
    check_hex(v[i].what, hex, v[i].hex);
  }
  uint8_t a[32] = {0}, b[32] = {0};
  CHECK(sha256_equal_ct(a, b, 32));
  b[31] = 1;
  CHECK(!sha256_equal_ct(a, b, 32));
  b[31] = 0, b[0] = 0x80;
  CHECK(!sha256_equal_ct(a, b, 32));
}

int main(void) {
  check_hmac();
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
