#pragma once
/// GGUF reader (llama.cpp's model format, versions 2 and 3).
///
/// The file is mmap'ed read-only; tensor data is never copied (views point
/// into the mapping, valid while the `gguf_file` lives). Every offset, length
/// and count is bounds-checked against the file: a truncated, corrupt or
/// unsupported file gives one `gguf_error` naming the file, the key or tensor
/// and the reason — never a crash or an unbounded allocation.
///
/// Immutable after `open`; safe to read from many threads.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/quant.hpp"

namespace llmux::engine::gguf {

/// A bad file: what() is "FILE: WHERE: REASON" (WHERE is "header", a
/// metadata key, "metadata #i" when the key itself is unreadable, "tensor
/// 'NAME'", "tensor #i" when the name is unreadable, or "open" for an I/O
/// error in `open`).
struct gguf_error : std::runtime_error {
  gguf_error(const std::string& file, const std::string& where, const std::string& reason);
  std::string file;
  std::string where;
  std::string reason;
};

enum class value_type : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

/// "u8", "string", "array", ... (or "type N" for a number GGUF does not define).
[[nodiscard]] std::string to_string(value_type t);

/// One metadata value. Scalars fill one of the members; arrays fill
/// `strings` (string arrays) or `numbers` (numeric and bool arrays, as
/// double: exact for every integer up to 2^53; GGUF vocab ids and token types
/// are far below). Nested arrays are read and skipped (elem_type = array,
/// `count` set, no elements kept).
struct value {
  value_type type = value_type::u8;
  uint64_t u = 0;    ///< unsigned integers and bool
  int64_t i = 0;     ///< signed integers (also set for unsigned ones that fit)
  double f = 0;      ///< floats (also set for every integer)
  std::string s;     ///< string
  value_type elem_type = value_type::u8;  ///< arrays
  uint64_t count = 0;                     ///< arrays: number of elements
  std::vector<std::string> strings;
  std::vector<double> numbers;
};

struct tensor_info {
  std::string name;
  std::vector<int64_t> dims;  ///< GGUF order: dims[0] is the contiguous (row) length
  kernels::dtype type = kernels::dtype::f32;
  uint64_t offset = 0;        ///< from the start of the data section
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  ///< into the mapping

  [[nodiscard]] int64_t n_elements() const;
};

/// A file mapped read-only; unmapped with its last handle.
struct mapped_file {
  const uint8_t* data = nullptr;
  size_t size = 0;
  mapped_file() = default;
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file();
};

/// Maps `path` (a regular file). Throws gguf_error(path, "open", why).
[[nodiscard]] std::shared_ptr<const mapped_file> map_file(const std::string& path);

class gguf_file {
public:
  /// Maps and parses `path`. Throws gguf_error.
  [[nodiscard]] static std::shared_ptr<gguf_file> open(const std::string& path);
  /// Parses a buffer the caller keeps alive (tests, fuzzing). `name` is used
  /// in errors. Throws gguf_error.
  [[nodiscard]] static std::shared_ptr<gguf_file> parse(const std::string& name,
                                                        const uint8_t* data, size_t size);
  /// A file made in memory from parts another format supplied (a Hugging
  /// Face model directory, engine/hf_model): metadata under GGUF's keys and
  /// tensors whose data stays alive as long as `keep` does.
  [[nodiscard]] static std::shared_ptr<gguf_file> assemble(std::string name, std::map<std::string, value> kv,
                                                           std::vector<tensor_info> tensors,
                                                           std::vector<std::shared_ptr<const void>> keep);
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] uint32_t version() const { return version_; }
  [[nodiscard]] uint64_t alignment() const { return alignment_; }
  [[nodiscard]] const std::map<std::string, value>& metadata() const { return kv_; }
  [[nodiscard]] const std::vector<tensor_info>& tensors() const { return tensors_; }

  [[nodiscard]] const value* find(const std::string& key) const;
  [[nodiscard]] const tensor_info* find_tensor(const std::string& name) const;

  // Typed getters: nullopt when absent; gguf_error when present with a type
  // that does not fit (e.g. a string where a number is needed).
  [[nodiscard]] std::optional<std::string> get_string(const std::string& key) const;
  [[nodiscard]] std::optional<int64_t> get_int(const std::string& key) const;   ///< any integer type
  [[nodiscard]] std::optional<double> get_float(const std::string& key) const;  ///< any numeric type
  [[nodiscard]] std::optional<bool> get_bool(const std::string& key) const;
  [[nodiscard]] const std::vector<std::string>* get_strings(const std::string& key) const;
  [[nodiscard]] const std::vector<double>* get_numbers(const std::string& key) const;

  /// gguf_error naming this file and `where`.
  [[noreturn]] void fail(const std::string& where, const std::string& reason) const;

private:
  gguf_file() = default;
  void parse_all(const uint8_t* data, size_t size);

  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, value> kv_;
  std::vector<tensor_info> tensors_;
  std::map<std::string, size_t> tensor_index_;
  std::vector<std::shared_ptr<const void>> keep_;  ///< what the tensors point into (open: the mapping)
};

}  // namespace llmux::engine::gguf
