// libFuzzer target for the GGUF reader: any input must either parse or throw
// gguf_error — never crash, read out of bounds, hit undefined behaviour or
// allocate without bound. See README.md in this folder.
//
// Built twice from this file: as the fuzzer (LLVMFuzzerTestOneInput), and
// with GGUF_FUZZ_SEED_WRITER as a plain program that writes the seed corpus.

#include "engine/gguf.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifndef GGUF_FUZZ_SEED_WRITER

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmux::engine::gguf;
  try {
    auto f = gguf_file::parse("fuzz.gguf", data, size);
    // Whatever parses must be safe to use: every tensor's bytes lie in the input.
    for (const auto& t : f->tensors()) {
      auto begin = reinterpret_cast<uintptr_t>(t.data);
      if (t.n_bytes == 0 || t.n_bytes > size || begin < reinterpret_cast<uintptr_t>(data)
          || begin - reinterpret_cast<uintptr_t>(data) > size - t.n_bytes)
        __builtin_trap();
      volatile uint8_t first = t.data[0], last = t.data[t.n_bytes - 1];  // ASan checks these too
      (void)first;
      (void)last;
    }
    for (const auto& [key, v] : f->metadata()) {
      try {
        if (v.type == value_type::string)
          (void)f->get_string(key);
        else if (v.type == value_type::array)
          (void)f->get_strings(key);
        else
          (void)f->get_float(key);
      } catch (const gguf_error&) {
        // a type mismatch (e.g. an array of numbers asked for as strings)
      }
    }
  } catch (const gguf_error&) {
    // a rejected file: the expected outcome for most inputs
  }
  return 0;
}

#else  // GGUF_FUZZ_SEED_WRITER

#include <filesystem>
#include <fstream>
#include <iostream>

namespace {

struct writer {
  std::vector<uint8_t> buf;
  void raw(const void* p, size_t n) {
    auto b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  }
  void le(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i)
      buf.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u8(uint8_t v) { le(v, 1); }
  void u32(uint32_t v) { le(v, 4); }
  void u64(uint64_t v) { le(v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void key(const std::string& k, uint32_t type) {
    str(k);
    u32(type);
  }
};

/// A small valid file with every value type, a nested array, a non-default
/// alignment and two tensors (F32 and Q8_0).
std::vector<uint8_t> small_seed() {
  writer w;
  w.raw("GGUF", 4);
  w.u32(3);
  w.u64(2);   // tensors
  w.u64(10);  // metadata
  w.key("general.architecture", 8), w.str("llama");
  w.key("llama.block_count", 4), w.u32(2);
  w.key("llama.rope.freq_base", 6), w.u32(0x461c4000);  // 10000.0f
  w.key("test.flag", 7), w.u8(1);
  w.key("test.i64", 11), w.u64(static_cast<uint64_t>(-5));
  w.key("test.f64", 12), w.u64(0x3fd0000000000000ull);  // 0.25
  w.key("tokenizer.ggml.tokens", 9), w.u32(8), w.u64(3), w.str("a"), w.str("bc"), w.str("");
  w.key("tokenizer.ggml.scores", 9), w.u32(6), w.u64(3), w.u32(0), w.u32(0), w.u32(0);
  w.key("test.nested", 9), w.u32(9), w.u64(2);
  w.u32(0), w.u64(2), w.u8(1), w.u8(2);
  w.u32(8), w.u64(1), w.str("x");
  w.key("general.alignment", 4), w.u32(64);
  w.str("a"), w.u32(2), w.u64(4), w.u64(2), w.u32(0), w.u64(0);  // F32 [4, 2]
  w.str("b"), w.u32(1), w.u64(32), w.u32(8), w.u64(64);         // Q8_0 [32]
  while (w.buf.size() % 64 != 0)
    w.u8(0);
  for (int k = 0; k < 64; ++k)
    w.u8(static_cast<uint8_t>(k));
  w.u8(0x00), w.u8(0x3c);  // Q8_0 block scale: f16 1.0
  for (int k = 0; k < 32; ++k)
    w.u8(static_cast<uint8_t>(k));
  return w.buf;
}

bool write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

}  // namespace

/// gguf_fuzz_seeds CORPUS_DIR [MODEL.gguf]: writes small.gguf and, given a
/// model, its first 64 KiB (header, metadata and tensor infos) into
/// CORPUS_DIR, creating it if needed.
int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " CORPUS_DIR [MODEL.gguf]\n";
    return 2;
  }
  std::string dir = argv[1];
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!write_file(dir + "/small.gguf", small_seed())) {
    std::cerr << "cannot write " << dir << "/small.gguf\n";
    return 1;
  }
  if (argc > 2) {
    std::ifstream in(argv[2], std::ios::binary);
    std::vector<uint8_t> head(64 * 1024);
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    if (head.empty() || !write_file(dir + "/model_head.gguf", head)) {
      std::cerr << "cannot read " << argv[2] << " or write " << dir << "/model_head.gguf\n";
      return 1;
    }
  }
  return 0;
}

#endif  // GGUF_FUZZ_SEED_WRITER
