// The GGUF reader: a real model (stories260K, facts cross-checked with the
// Python `gguf` package), small files built here byte by byte for each way a
// file can be wrong, every truncation of a valid file, and random mutations
// that must end in either a parsed file or a gguf_error — nothing else.

#include "engine/gguf.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace llmux::engine::gguf;
using llmux::kernels::dtype;

namespace {

const std::string stories_path = LLMUX_SHARED_DIR "/models/stories260K/stories260K.gguf";

/// Writes GGUF by hand, so tests can also write it wrong.
class gguf_writer {
public:
  std::vector<uint8_t> buf;

  gguf_writer& raw(const void* p, size_t n) {
    auto b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
    return *this;
  }
  gguf_writer& u8(uint8_t v) { return raw(&v, 1); }
  gguf_writer& u32(uint32_t v) { return le(v, 4); }
  gguf_writer& u64(uint64_t v) { return le(v, 8); }
  gguf_writer& f32(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return u32(b);
  }
  gguf_writer& str(const std::string& s) { return u64(s.size()).raw(s.data(), s.size()); }

  gguf_writer& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return raw("GGUF", 4).u32(version).u64(n_tensors).u64(n_kv);
  }
  gguf_writer& kv(const std::string& key, value_type t) { return str(key).u32(static_cast<uint32_t>(t)); }
  gguf_writer& kv_u32(const std::string& key, uint32_t v) { return kv(key, value_type::u32).u32(v); }
  gguf_writer& kv_str(const std::string& key, const std::string& s) { return kv(key, value_type::string).str(s); }
  gguf_writer& array(value_type elem, uint64_t n) { return u32(static_cast<uint32_t>(elem)).u64(n); }

  gguf_writer& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims)
      u64(d);
    return u32(type).u64(offset);
  }
  gguf_writer& pad(size_t alignment) {
    while (buf.size() % alignment != 0)
      u8(0);
    return *this;
  }
  gguf_writer& zeros(size_t n) {
    buf.resize(buf.size() + n, 0);
    return *this;
  }

private:
  gguf_writer& le(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i)
      buf.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
};

constexpr uint32_t f32_type = 0;
constexpr uint32_t q2_k_type = 10;
constexpr uint32_t q8_0_type = 8;

/// A valid file touching every value type, with general.alignment = 64 and
/// two tensors; it ends exactly where the last tensor's data ends, so every
/// proper prefix of it is invalid.
std::vector<uint8_t> small_file() {
  gguf_writer w;
  w.header(2, 12);
  w.kv_str("general.architecture", "llama");
  w.kv_u32("llama.block_count", 2);
  w.kv("llama.rope.freq_base", value_type::f32).f32(10000.0f);
  w.kv("test.flag", value_type::boolean).u8(1);
  w.kv("test.i8", value_type::i8).u8(0xfb);  // -5
  w.kv("test.u64", value_type::u64).u64((1ull << 63) + 1);
  w.kv("test.f64", value_type::f64).u64(0x3fd0000000000000ull);  // 0.25
  w.kv("tokenizer.ggml.tokens", value_type::array).array(value_type::string, 3).str("a").str("bc").str("");
  w.kv("tokenizer.ggml.token_type", value_type::array).array(value_type::i32, 3).u32(1).u32(static_cast<uint32_t>(-2)).u32(3);
  w.kv("test.nested", value_type::array).array(value_type::array, 2);
  w.array(value_type::u8, 2).u8(1).u8(2);
  w.array(value_type::string, 1).str("x");
  w.kv("test.bools", value_type::array).array(value_type::boolean, 2).u8(0).u8(1);
  w.kv_u32("general.alignment", 64);
  w.tensor("a", {4, 2}, f32_type, 0);
  w.tensor("b", {32}, q8_0_type, 64);
  w.pad(64);
  for (int k = 0; k < 8; ++k)
    w.f32(static_cast<float>(k) + 0.5f);
  w.zeros(32);          // up to offset 64
  w.u8(0x00).u8(0x3c);  // Q8_0 block: f16 d = 1.0
  for (int k = 0; k < 32; ++k)
    w.u8(static_cast<uint8_t>(k));
  return w.buf;
}

/// A file with no metadata and one tensor "w" followed by `data_bytes` bytes.
std::vector<uint8_t> one_tensor(std::vector<uint64_t> dims, uint32_t type, uint64_t offset, size_t data_bytes) {
  gguf_writer w;
  w.header(1, 0).tensor("w", std::move(dims), type, offset).pad(32).zeros(data_bytes);
  return w.buf;
}

std::optional<gguf_error> parse_error(const std::vector<uint8_t>& b) {
  try {
    (void)gguf_file::parse("t.gguf", b.data(), b.size());
  } catch (const gguf_error& e) {
    return e;
  }
  return std::nullopt;
}

#define CHECK_GGUF_ERROR(bytes, want_where, reason_part)                 \
  do {                                                                   \
    auto err_ = parse_error(bytes);                                      \
    REQUIRE(err_);                                                       \
    INFO(err_->what());                                                  \
    CHECK(err_->where == (want_where));                                  \
    CHECK_THAT(err_->reason, Catch::Contains(reason_part));              \
    CHECK(std::string(err_->what()) == "t.gguf: " + err_->where + ": " + err_->reason); \
  } while (0)

std::vector<uint8_t> read_prefix(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::vector<uint8_t> out(max_bytes);
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(max_bytes));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

}  // namespace

TEST_CASE("gguf: stories260K metadata", "[gguf]") {
  auto f = gguf_file::open(stories_path);
  CHECK(f->path() == stories_path);
  CHECK(f->version() == 3);
  CHECK(f->alignment() == 32);
  CHECK(f->metadata().size() == 19);
  CHECK(f->get_string("general.architecture") == "llama");
  CHECK(f->get_string("tokenizer.ggml.model") == "llama");
  CHECK(f->get_int("llama.block_count") == 5);
  CHECK(f->get_int("llama.embedding_length") == 64);
  CHECK(f->get_int("llama.feed_forward_length") == 172);
  CHECK(f->get_int("llama.attention.head_count") == 8);
  CHECK(f->get_int("llama.attention.head_count_kv") == 4);
  CHECK(f->get_int("llama.context_length") == 128);
  CHECK(f->get_int("llama.rope.dimension_count") == 8);
  CHECK(f->get_int("tokenizer.ggml.bos_token_id") == 1);
  CHECK(f->get_int("tokenizer.ggml.eos_token_id") == 2);
  CHECK(f->get_int("tokenizer.ggml.padding_token_id") == 4294967295);
  CHECK(f->get_float("llama.attention.layer_norm_rms_epsilon") == static_cast<double>(1e-5f));
  CHECK(f->find("llama.block_count")->type == value_type::u32);
  CHECK_FALSE(f->get_int("llama.no_such_key"));

  const auto* tokens = f->get_strings("tokenizer.ggml.tokens");
  REQUIRE(tokens);
  REQUIRE(tokens->size() == 512);
  CHECK((*tokens)[0] == "<unk>");
  CHECK((*tokens)[1] == "<s>");
  CHECK((*tokens)[2] == "</s>");
  CHECK((*tokens)[3] == "<0x00>");
  CHECK((*tokens)[100] == "<0x61>");
  CHECK((*tokens)[259] == "\xe2\x96\x81t");   // "▁t"
  CHECK((*tokens)[300] == "\xe2\x96\x81ha");  // "▁ha"
  CHECK((*tokens)[511] == "\xe2\x80\x8a");    // U+200A hair space

  const auto* scores = f->get_numbers("tokenizer.ggml.scores");
  REQUIRE(scores);
  REQUIRE(scores->size() == 512);
  CHECK((*scores)[0] == 0.0);
  CHECK((*scores)[300] == -41.0);
  CHECK((*scores)[511] == -252.0);
  const auto* types = f->get_numbers("tokenizer.ggml.token_type");
  REQUIRE(types);
  CHECK(f->find("tokenizer.ggml.token_type")->elem_type == value_type::i32);
  CHECK((*types)[0] == 2);
  CHECK((*types)[1] == 3);
  CHECK((*types)[3] == 6);
  CHECK((*types)[300] == 1);
}

TEST_CASE("gguf: stories260K tensors", "[gguf]") {
  auto f = gguf_file::open(stories_path);
  REQUIRE(f->tensors().size() == 48);
  // Data section at 14176 (the Python reader's data_offset of the first tensor).
  constexpr uint64_t data_start = 14176;
  constexpr uint64_t file_size = 1185376;

  const auto* embd = f->find_tensor("token_embd.weight");
  REQUIRE(embd);
  CHECK(embd == &f->tensors()[0]);
  CHECK(embd->dims == std::vector<int64_t>{64, 512});
  CHECK(embd->type == dtype::f32);
  CHECK(embd->offset == 0);
  CHECK(embd->n_bytes == 131072);
  CHECK(embd->n_elements() == 64 * 512);
  // First floats as `gguf.GGUFReader(...).tensors[0].data.ravel()[:8]` gives them.
  const float want[8] = {-0.29474878311157227f, 0.5618956089019775f,  0.1754225343465805f,
                         0.34057360887527466f,  -0.11446066945791245f, 0.2313181459903717f,
                         0.009594066999852657f, 0.02545861154794693f};
  float got[8];
  std::memcpy(got, embd->data, sizeof got);
  for (int k = 0; k < 8; ++k)
    CHECK(got[k] == want[k]);

  const auto* norm = f->find_tensor("output_norm.weight");
  REQUIRE(norm);
  CHECK(norm->dims == std::vector<int64_t>{64});
  CHECK(norm->offset == 145248 - data_start);
  const auto* down = f->find_tensor("blk.0.ffn_down.weight");
  REQUIRE(down);
  CHECK(down->dims == std::vector<int64_t>{172, 64});
  CHECK(down->type == dtype::f32);
  CHECK(down->n_bytes == 44032);
  CHECK(down->offset == 370016 - data_start);
  const auto* k4 = f->find_tensor("blk.4.attn_k.weight");
  REQUIRE(k4);
  CHECK(k4->dims == std::vector<int64_t>{64, 32});
  // The last tensor ends exactly at the end of the file.
  const auto& last = f->tensors().back();
  CHECK(last.name == "blk.4.ffn_norm.weight");
  CHECK(data_start + last.offset + last.n_bytes == file_size);
  CHECK(last.data == embd->data + last.offset);
  CHECK(f->find_tensor("no.such.tensor") == nullptr);
}

TEST_CASE("gguf: small file, every value type", "[gguf]") {
  auto b = small_file();
  auto f = gguf_file::parse("small.gguf", b.data(), b.size());
  CHECK(f->path() == "small.gguf");
  CHECK(f->alignment() == 64);
  CHECK(f->metadata().size() == 12);
  CHECK(f->get_string("general.architecture") == "llama");
  CHECK(f->get_int("llama.block_count") == 2);
  CHECK(f->get_float("llama.block_count") == 2.0);
  CHECK(f->get_float("llama.rope.freq_base") == 10000.0);
  CHECK(f->get_bool("test.flag") == true);
  CHECK(f->get_int("test.i8") == -5);
  CHECK(f->get_float("test.f64") == 0.25);
  CHECK(f->find("test.u64")->u == (1ull << 63) + 1);
  CHECK(*f->get_strings("tokenizer.ggml.tokens") == std::vector<std::string>{"a", "bc", ""});
  CHECK(*f->get_numbers("tokenizer.ggml.token_type") == std::vector<double>{1, -2, 3});
  CHECK(*f->get_numbers("test.bools") == std::vector<double>{0, 1});
  const value* nested = f->find("test.nested");
  REQUIRE(nested);
  CHECK(nested->elem_type == value_type::array);
  CHECK(nested->count == 2);
  CHECK(nested->numbers.empty());

  REQUIRE(f->tensors().size() == 2);
  const auto* a = f->find_tensor("a");
  const auto* q = f->find_tensor("b");
  REQUIRE(a);
  REQUIRE(q);
  CHECK(a->dims == std::vector<int64_t>{4, 2});
  CHECK(a->n_bytes == 32);
  CHECK(q->type == dtype::q8_0);
  CHECK(q->n_bytes == 34);
  CHECK((a->data - b.data()) % 64 == 0);
  CHECK(q->data == a->data + 64);
  CHECK(q->data + q->n_bytes == b.data() + b.size());
  float a3;
  std::memcpy(&a3, a->data + 12, 4);
  CHECK(a3 == 3.5f);
  CHECK(q->data[2 + 31] == 31);
}

TEST_CASE("gguf: typed getters reject the wrong type", "[gguf]") {
  auto b = small_file();
  auto f = gguf_file::parse("small.gguf", b.data(), b.size());
  auto where_reason = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const gguf_error& e) {
      return e.where + ": " + e.reason;
    }
    return "no error";
  };
  CHECK(where_reason([&] { (void)f->get_int("general.architecture"); })
        == "general.architecture: expected an integer, found string");
  CHECK(where_reason([&] { (void)f->get_string("llama.block_count"); })
        == "llama.block_count: expected a string, found u32");
  CHECK(where_reason([&] { (void)f->get_int("test.u64"); })
        == "test.u64: value 9223372036854775809 does not fit in int64");
  CHECK(where_reason([&] { (void)f->get_float("test.flag"); }) == "test.flag: expected a number, found bool");
  CHECK(where_reason([&] { (void)f->get_bool("llama.block_count"); })
        == "llama.block_count: expected a bool, found u32");
  CHECK(where_reason([&] { (void)f->get_strings("tokenizer.ggml.token_type"); })
        == "tokenizer.ggml.token_type: expected an array of strings, found array of i32");
  CHECK(where_reason([&] { (void)f->get_numbers("tokenizer.ggml.tokens"); })
        == "tokenizer.ggml.tokens: expected an array of numbers, found array of string");
  CHECK(where_reason([&] { (void)f->get_numbers("test.nested"); })
        == "test.nested: expected an array of numbers, found array of array");
}

TEST_CASE("gguf: open maps a file and reports I/O errors", "[gguf]") {
  auto dir = std::filesystem::temp_directory_path();
  auto path = (dir / ("llmux_gguf_test_" + std::to_string(::getpid()) + ".gguf")).string();
  auto b = small_file();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  {
    auto f = gguf_file::open(path);
    CHECK(f->get_int("llama.block_count") == 2);
    REQUIRE(f->find_tensor("b"));
    CHECK(f->find_tensor("b")->data[2 + 7] == 7);
  }
  std::filesystem::resize_file(path, b.size() - 1);
  try {
    (void)gguf_file::open(path);
    FAIL("no error");
  } catch (const gguf_error& e) {
    CHECK(e.file == path);
    CHECK(e.where == "tensor 'b'");
  }
  std::filesystem::remove(path);
  try {
    (void)gguf_file::open(path);
    FAIL("no error");
  } catch (const gguf_error& e) {
    CHECK(std::string(e.what()) == path + ": open: No such file or directory");
  }
  try {
    (void)gguf_file::open(dir.string());
    FAIL("no error");
  } catch (const gguf_error& e) {
    CHECK(e.reason == "not a regular file");
  }
}

TEST_CASE("gguf: header errors", "[gguf]") {
  gguf_writer magic;
  magic.raw("GGML", 4).u32(3).u64(0).u64(0);
  CHECK_GGUF_ERROR(magic.buf, "header", "bad magic \"GGML\" (expected \"GGUF\")");

  gguf_writer v1;
  v1.header(0, 0, 1);
  CHECK_GGUF_ERROR(v1.buf, "header", "unsupported version 1 (supported: 2, 3)");
  gguf_writer v4;
  v4.header(0, 0, 4);
  CHECK_GGUF_ERROR(v4.buf, "header", "unsupported version 4");
  gguf_writer big_endian;
  big_endian.header(0, 0, 3u << 24);
  CHECK_GGUF_ERROR(big_endian.buf, "header", "big-endian");

  gguf_writer v2;
  v2.header(0, 0, 2);
  CHECK(gguf_file::parse("t.gguf", v2.buf.data(), v2.buf.size())->version() == 2);

  gguf_writer many_kv;
  many_kv.header(0, 1ull << 40);
  CHECK_GGUF_ERROR(many_kv.buf, "header", "metadata count 1099511627776 cannot fit");
  gguf_writer many_tensors;
  many_tensors.header(~0ull, 0);
  CHECK_GGUF_ERROR(many_tensors.buf, "header", "tensor count 18446744073709551615 cannot fit");

  CHECK_GGUF_ERROR(std::vector<uint8_t>{}, "header", "truncated: magic needs 4 bytes at offset 0, 0 left");
}

TEST_CASE("gguf: every truncation of a valid file is an error", "[gguf]") {
  auto b = small_file();
  REQUIRE_NOTHROW(gguf_file::parse("t.gguf", b.data(), b.size()));
  for (size_t n = 0; n < b.size(); ++n) {
    // An exact-size heap copy, so a sanitizer sees any read past the end.
    std::vector<uint8_t> prefix(b.begin(), b.begin() + static_cast<ptrdiff_t>(n));
    INFO("prefix of " << n << " bytes");
    REQUIRE(parse_error(prefix));
  }
}

TEST_CASE("gguf: metadata errors", "[gguf]") {
  SECTION("key length beyond the end") {
    gguf_writer w;
    w.header(0, 1).u64(1000).raw("abc", 3).zeros(20);
    CHECK_GGUF_ERROR(w.buf, "metadata #0", "key length 1000 at offset 24 runs past the end of the file (23 bytes left)");
  }
  SECTION("string value length beyond the end") {
    gguf_writer w;
    w.header(0, 1).kv("general.name", value_type::string).u64(~0ull).raw("xy", 2);
    CHECK_GGUF_ERROR(w.buf, "general.name", "string length 18446744073709551615");
    CHECK_GGUF_ERROR(w.buf, "general.name", "runs past the end of the file (2 bytes left)");
  }
  SECTION("array count 2^60") {
    gguf_writer w;
    w.header(0, 1).kv("tokenizer.ggml.tokens", value_type::array).array(value_type::string, 1ull << 60).zeros(64);
    CHECK_GGUF_ERROR(w.buf, "tokenizer.ggml.tokens",
                     "array count 1152921504606846976 does not fit in the 64 bytes left (each string takes at least 8)");
    gguf_writer n;
    n.header(0, 1).kv("scores", value_type::array).array(value_type::f32, 1ull << 60).zeros(64);
    CHECK_GGUF_ERROR(n.buf, "scores", "array count 1152921504606846976 does not fit");
  }
  SECTION("nested array count beyond the end") {
    gguf_writer w;
    w.header(0, 1).kv("k", value_type::array).array(value_type::array, 1).array(value_type::u64, 3).u64(1);
    CHECK_GGUF_ERROR(w.buf, "k", "array count 3 does not fit");
  }
  SECTION("arrays nested too deep") {
    gguf_writer w;
    w.header(0, 1).kv("deep", value_type::array);
    for (int d = 0; d < 20; ++d)
      w.array(value_type::array, 1);
    w.array(value_type::u8, 0);
    CHECK_GGUF_ERROR(w.buf, "deep", "arrays nested deeper than 8 levels");
  }
  SECTION("duplicate key") {
    gguf_writer w;
    w.header(0, 2).kv_u32("llama.block_count", 1).kv_u32("llama.block_count", 2);
    CHECK_GGUF_ERROR(w.buf, "llama.block_count", "duplicate key");
  }
  SECTION("empty key") {
    gguf_writer w;
    w.header(0, 2).kv_u32("a", 1).kv_u32("", 2);
    CHECK_GGUF_ERROR(w.buf, "metadata #1", "empty key");
  }
  SECTION("unknown value types") {
    gguf_writer w;
    w.header(0, 1).kv("k", static_cast<value_type>(13)).u64(0);
    CHECK_GGUF_ERROR(w.buf, "k", "unknown value type 13");
    gguf_writer a;
    a.header(0, 1).kv("k", value_type::array).u32(99).u64(0);
    CHECK_GGUF_ERROR(a.buf, "k", "unknown array element type 99");
  }
  SECTION("bool that is neither 0 nor 1") {
    gguf_writer w;
    w.header(0, 1).kv("b", value_type::boolean).u8(2);
    CHECK_GGUF_ERROR(w.buf, "b", "bool value 2 is neither 0 nor 1");
  }
  SECTION("alignment not a power of two") {
    gguf_writer w;
    w.header(0, 1).kv_u32("general.alignment", 48);
    CHECK_GGUF_ERROR(w.buf, "general.alignment", "alignment 48 is not a power of two");
    gguf_writer z;
    z.header(0, 1).kv_u32("general.alignment", 0);
    CHECK_GGUF_ERROR(z.buf, "general.alignment", "alignment 0 is not a power of two");
    gguf_writer s;
    s.header(0, 1).kv_str("general.alignment", "32");
    CHECK_GGUF_ERROR(s.buf, "general.alignment", "expected an integer, found string");
  }
}

TEST_CASE("gguf: tensor errors", "[gguf]") {
  SECTION("valid") {
    auto b = one_tensor({32, 3}, q8_0_type, 0, 3 * 34);
    auto f = gguf_file::parse("t.gguf", b.data(), b.size());
    CHECK(f->tensors().at(0).n_bytes == 3 * 34);
  }
  SECTION("unsupported type") {
    auto b = one_tensor({256}, q2_k_type, 0, 84);
    auto err = parse_error(b);
    REQUIRE(err);
    CHECK(std::string(err->what())
          == "t.gguf: tensor 'w': unsupported type Q2_K "
             "(supported: F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16)");
    CHECK_GGUF_ERROR(one_tensor({32}, 1000, 0, 64), "tensor 'w'", "unsupported type type 1000");
  }
  SECTION("data past the end") {
    CHECK_GGUF_ERROR(one_tensor({8, 2}, f32_type, 0, 63), "tensor 'w'", "data runs past the end of the file");
    CHECK_GGUF_ERROR(one_tensor({8}, f32_type, 1ull << 63, 32), "tensor 'w'", "data runs past the end of the file");
    CHECK_GGUF_ERROR(one_tensor({1ull << 61, 1}, f32_type, 0, 32), "tensor 'w'", "data runs past the end of the file");
  }
  SECTION("misaligned offset") {
    CHECK_GGUF_ERROR(one_tensor({8}, f32_type, 4, 64), "tensor 'w'", "offset 4 is not a multiple of the alignment 32");
  }
  SECTION("n_dims") {
    CHECK_GGUF_ERROR(one_tensor({1, 1, 1, 1, 1}, f32_type, 0, 32), "tensor 'w'", "n_dims 5 (must be 1 to 4)");
    CHECK_GGUF_ERROR(one_tensor({}, f32_type, 0, 32), "tensor 'w'", "n_dims 0 (must be 1 to 4)");
    auto four = one_tensor({1, 2, 3, 4}, f32_type, 0, 96);
    CHECK(gguf_file::parse("t.gguf", four.data(), four.size())->tensors()[0].n_elements() == 24);
  }
  SECTION("bad dimensions") {
    CHECK_GGUF_ERROR(one_tensor({8, 0}, f32_type, 0, 32), "tensor 'w'", "dimension 1 is 0 (must be positive)");
    CHECK_GGUF_ERROR(one_tensor({~0ull}, f32_type, 0, 32), "tensor 'w'", "dimension 0 is -1 (must be positive)");
    CHECK_GGUF_ERROR(one_tensor({1ull << 32, 1ull << 32}, f32_type, 0, 32), "tensor 'w'",
                     "element count overflows int64");
    CHECK_GGUF_ERROR(one_tensor({1ull << 62, 1}, f32_type, 0, 32), "tensor 'w'", "size in bytes overflows 64 bits");
    CHECK_GGUF_ERROR(one_tensor({33}, q8_0_type, 0, 64), "tensor 'w'",
                     "row length 33 is not a multiple of the Q8_0 block size 32");
  }
  SECTION("duplicate and empty names") {
    gguf_writer w;
    w.header(2, 0).tensor("w", {8}, f32_type, 0).tensor("w", {8}, f32_type, 32).pad(32).zeros(64);
    CHECK_GGUF_ERROR(w.buf, "tensor 'w'", "duplicate tensor name");
    gguf_writer e;
    e.header(1, 0).tensor("", {8}, f32_type, 0).pad(32).zeros(32);
    CHECK_GGUF_ERROR(e.buf, "tensor #0", "empty tensor name");
    gguf_writer t;
    t.header(1, 0).u64(100).raw("w", 1).zeros(40);
    CHECK_GGUF_ERROR(t.buf, "tensor #0", "tensor name length 100");
  }
}

TEST_CASE("gguf: random mutations give a file or a gguf_error", "[gguf]") {
  std::vector<std::vector<uint8_t>> bases = {small_file(), read_prefix(stories_path, 64 * 1024)};
  REQUIRE(bases[1].size() == 64 * 1024);
  std::mt19937_64 rng(20240611);
  int parsed = 0, rejected = 0;
  uint64_t checksum = 0;
  for (const auto& base : bases) {
    for (int iter = 0; iter < 3000; ++iter) {
      std::vector<uint8_t> b = base;
      // Half the edits land in the first 16 KiB: the header, metadata and
      // tensor infos, where the parser makes its decisions.
      auto offset = [&](size_t width) {
        size_t span = b.size() - width + 1;
        if (rng() % 2)
          span = std::min<size_t>(span, 16 * 1024);
        return static_cast<size_t>(rng() % span);
      };
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        if (rng() % 2) {
          b[offset(1)] ^= static_cast<uint8_t>(1 + rng() % 255);
        } else {
          const uint64_t interesting[] = {rng(), rng() % 256, 1ull << 60, ~0ull, 0, 1ull << 63, rng() & 0xffffffff};
          uint64_t v = interesting[rng() % 7];
          std::memcpy(&b[offset(8)], &v, 8);
        }
      }
      if (rng() % 8 == 0)
        b.resize(rng() % (b.size() + 1));
      try {
        auto f = gguf_file::parse("mutant.gguf", b.data(), b.size());
        // Touch everything a caller may touch.
        for (const auto& t : f->tensors()) {
          auto begin = static_cast<size_t>(t.data - b.data());
          REQUIRE((t.n_bytes > 0 && begin <= b.size() && t.n_bytes <= b.size() - begin));
          checksum += t.data[0] + t.data[t.n_bytes - 1];  // a sanitizer checks these reads
        }
        ++parsed;
      } catch (const gguf_error&) {
        ++rejected;
      } catch (const std::exception& e) {
        FAIL("iteration " << iter << ": unexpected exception: " << e.what());
      }
    }
  }
  INFO(parsed << " parsed, " << rejected << " rejected, tensor byte checksum " << checksum);
  CHECK(parsed + rejected == 6000);
  CHECK(parsed > 0);
}
