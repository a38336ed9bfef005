#include "engine/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <system_error>
#include <utility>

namespace llmux::engine::gguf {

gguf_error::gguf_error(const std::string& file, const std::string& where, const std::string& reason)
  : std::runtime_error(file + ": " + where + ": " + reason), file(file), where(where), reason(reason) {
}

std::string to_string(value_type t) {
  switch (t) {
    case value_type::u8: return "u8";
    case value_type::i8: return "i8";
    case value_type::u16: return "u16";
    case value_type::i16: return "i16";
    case value_type::u32: return "u32";
    case value_type::i32: return "i32";
    case value_type::f32: return "f32";
    case value_type::boolean: return "bool";
    case value_type::string: return "string";
    case value_type::array: return "array";
    case value_type::u64: return "u64";
    case value_type::i64: return "i64";
    case value_type::f64: return "f64";
  }
  return "type " + std::to_string(static_cast<uint32_t>(t));
}

namespace {

constexpr uint32_t gguf_magic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t max_dims = 4;             // ggml's GGML_MAX_DIMS
// Arrays of arrays are legal; the cap keeps a crafted file from recursing
// deep enough to exhaust the stack.
constexpr int max_array_depth = 8;
// Smallest possible encodings, used to reject counts that cannot fit in the
// bytes left before anything is allocated from them.
constexpr uint64_t min_kv_bytes = 8 + 4 + 1;              // empty key, type, u8
constexpr uint64_t min_tensor_info_bytes = 8 + 4 + 8 + 4 + 8;  // 1 dim

bool is_known(uint32_t t) { return t <= static_cast<uint32_t>(value_type::f64); }

bool is_unsigned(value_type t) {
  return t == value_type::u8 || t == value_type::u16 || t == value_type::u32 || t == value_type::u64;
}
bool is_signed(value_type t) {
  return t == value_type::i8 || t == value_type::i16 || t == value_type::i32 || t == value_type::i64;
}
bool is_float(value_type t) { return t == value_type::f32 || t == value_type::f64; }

/// Bytes of one scalar in the file (0 for string and array).
uint64_t scalar_bytes(value_type t) {
  switch (t) {
    case value_type::u8:
    case value_type::i8:
    case value_type::boolean:
      return 1;
    case value_type::u16:
    case value_type::i16:
      return 2;
    case value_type::u32:
    case value_type::i32:
    case value_type::f32:
      return 4;
    case value_type::u64:
    case value_type::i64:
    case value_type::f64:
      return 8;
    default:
      return 0;
  }
}

/// The fewest bytes one element of type `t` can take in the file.
uint64_t min_elem_bytes(value_type t) {
  if (t == value_type::string)
    return 8;   // u64 length
  if (t == value_type::array)
    return 12;  // u32 element type + u64 count
  return scalar_bytes(t);
}

std::string describe(const value& v) {
  if (v.type == value_type::array)
    return "array of " + to_string(v.elem_type);
  return to_string(v.type);
}

/// Bad magic as text: printable bytes as-is, others as \xNN.
std::string quote_magic(uint32_t m) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (int i = 0; i < 4; ++i) {
    auto c = static_cast<unsigned char>(m >> (8 * i));
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out + "\"";
}

std::string supported_types() {
  std::string out;
  for (uint32_t t = 0; t < 256; ++t) {
    if (auto d = kernels::supported_dtype(t)) {
      if (!out.empty())
        out += ", ";
      out += kernels::to_string(*d);
    }
  }
  return out;
}

/// Little-endian reads from [data, data + size); each one is bounds-checked
/// and fails with the current `where`.
class cursor {
public:
  cursor(const gguf_file& file, const uint8_t* data, size_t size)
    : file_(file), data_(data), size_(size) {}

  [[nodiscard]] uint64_t pos() const { return pos_; }
  [[nodiscard]] uint64_t left() const { return size_ - pos_; }
  void at(std::string where) { where_ = std::move(where); }
  [[noreturn]] void fail(const std::string& reason) const { file_.fail(where_, reason); }

  void need(uint64_t n, const char* what) const {
    if (n > left())
      fail(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes at offset "
           + std::to_string(pos_) + ", " + std::to_string(left()) + " left");
  }

  uint64_t read_le(unsigned bytes, const char* what) {
    need(bytes, what);
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; ++i)
      v |= static_cast<uint64_t>(data_[pos_ + i]) << (8 * i);
    pos_ += bytes;
    return v;
  }
  uint32_t u32(const char* what) { return static_cast<uint32_t>(read_le(4, what)); }
  uint64_t u64(const char* what) { return read_le(8, what); }

  void skip(uint64_t n, const char* what) {
    need(n, what);
    pos_ += n;
  }

  /// Reads the u64 length of a string and checks it against the bytes left.
  uint64_t string_length(const char* what) {
    uint64_t n = u64(what);
    if (n > left())
      fail(std::string(what) + " length " + std::to_string(n) + " at offset " + std::to_string(pos_ - 8)
           + " runs past the end of the file (" + std::to_string(left()) + " bytes left)");
    return n;
  }
  std::string string(const char* what) {
    uint64_t n = string_length(what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }

private:
  const gguf_file& file_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string where_;
};

/// Reads one scalar of type `t` into v.u / v.i / v.f as the contract says.
void read_scalar(cursor& c, value_type t, value& v) {
  uint64_t bits = c.read_le(static_cast<unsigned>(scalar_bytes(t)), "value");
  switch (t) {
    case value_type::u8:
    case value_type::u16:
    case value_type::u32:
    case value_type::u64:
      v.u = bits;
      if (bits <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        v.i = static_cast<int64_t>(bits);
      v.f = static_cast<double>(bits);
      break;
    case value_type::i8: v.i = static_cast<int8_t>(bits); v.f = static_cast<double>(v.i); break;
    case value_type::i16: v.i = static_cast<int16_t>(bits); v.f = static_cast<double>(v.i); break;
    case value_type::i32: v.i = static_cast<int32_t>(bits); v.f = static_cast<double>(v.i); break;
    case value_type::i64: v.i = static_cast<int64_t>(bits); v.f = static_cast<double>(v.i); break;
    case value_type::f32: {
      auto b = static_cast<uint32_t>(bits);
      float x;
      std::memcpy(&x, &b, sizeof x);
      v.f = x;
      break;
    }
    case value_type::f64: std::memcpy(&v.f, &bits, sizeof v.f); break;
    case value_type::boolean:
      if (bits > 1)
        c.fail("bool value " + std::to_string(bits) + " is neither 0 nor 1");
      v.u = bits;
      break;
    default:
      break;
  }
}

/// Element type and count of an array, the count checked against the bytes
/// left before anything is allocated for it.
std::pair<value_type, uint64_t> read_array_header(cursor& c, int depth) {
  if (depth > max_array_depth)
    c.fail("arrays nested deeper than " + std::to_string(max_array_depth) + " levels");
  uint32_t et = c.u32("array element type");
  if (!is_known(et))
    c.fail("unknown array element type " + std::to_string(et));
  auto elem = static_cast<value_type>(et);
  uint64_t n = c.u64("array count");
  uint64_t min = min_elem_bytes(elem);
  if (n > c.left() / min)
    c.fail("array count " + std::to_string(n) + " does not fit in the " + std::to_string(c.left())
           + " bytes left (each " + to_string(elem) + " takes at least " + std::to_string(min) + ")");
  return {elem, n};
}

void skip_array(cursor& c, int depth) {
  auto [elem, n] = read_array_header(c, depth);
  if (elem == value_type::string) {
    for (uint64_t k = 0; k < n; ++k)
      c.skip(c.string_length("string"), "string");
  } else if (elem == value_type::array) {
    for (uint64_t k = 0; k < n; ++k)
      skip_array(c, depth + 1);
  } else {
    c.skip(n * scalar_bytes(elem), "array");  // n * size <= left, checked above
  }
}

void read_array(cursor& c, value& v) {
  auto [elem, n] = read_array_header(c, 1);
  v.elem_type = elem;
  v.count = n;
  if (elem == value_type::string) {
    v.strings.reserve(static_cast<size_t>(n));
    for (uint64_t k = 0; k < n; ++k)
      v.strings.push_back(c.string("string"));
  } else if (elem == value_type::array) {
    for (uint64_t k = 0; k < n; ++k)
      skip_array(c, 2);
  } else {
    v.numbers.reserve(static_cast<size_t>(n));
    value x;
    for (uint64_t k = 0; k < n; ++k) {
      read_scalar(c, elem, x);
      v.numbers.push_back(elem == value_type::boolean ? static_cast<double>(x.u) : x.f);
    }
  }
}

void read_value(cursor& c, value& v) {
  if (v.type == value_type::string)
    v.s = c.string("string");
  else if (v.type == value_type::array)
    read_array(c, v);
  else
    read_scalar(c, v.type, v);
}

}  // namespace

int64_t tensor_info::n_elements() const {
  int64_t n = 1;
  for (int64_t d : dims)
    n *= d;
  return n;
}

mapped_file::~mapped_file() {
  if (data != nullptr)
    ::munmap(const_cast<uint8_t*>(data), size);
}

std::shared_ptr<const mapped_file> map_file(const std::string& path) {
  auto fail_open = [&](const std::string& reason) { throw gguf_error(path, "open", reason); };
  auto os_error = [](const char* call) {
    return std::string(call) + ": " + std::error_code(errno, std::generic_category()).message();
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fail_open(std::error_code(errno, std::generic_category()).message());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string reason = os_error("fstat");
    ::close(fd);
    fail_open(reason);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_open("not a regular file");
  }
  auto m = std::make_shared<mapped_file>();
  const auto size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
      std::string reason = os_error("mmap");
      ::close(fd);
      fail_open(reason);
    }
    m->data = static_cast<const uint8_t*>(base);
    m->size = size;
  }
  ::close(fd);  // the mapping keeps the file alive
  return m;
}

std::shared_ptr<gguf_file> gguf_file::open(const std::string& path) {
  auto m = map_file(path);
  std::shared_ptr<gguf_file> f(new gguf_file());
  f->path_ = path;
  f->keep_.push_back(m);
  f->parse_all(m->data, m->size);
  return f;
}

std::shared_ptr<gguf_file> gguf_file::assemble(std::string name, std::map<std::string, value> kv,
                                               std::vector<tensor_info> tensors,
                                               std::vector<std::shared_ptr<const void>> keep) {
  std::shared_ptr<gguf_file> f(new gguf_file());
  f->path_ = std::move(name);
  f->version_ = 3;
  f->kv_ = std::move(kv);
  f->tensors_ = std::move(tensors);
  for (size_t i = 0; i < f->tensors_.size(); ++i)
    if (!f->tensor_index_.emplace(f->tensors_[i].name, i).second)
      f->fail("tensor '" + f->tensors_[i].name + "'", "appears twice");
  f->keep_ = std::move(keep);
  return f;
}

std::shared_ptr<gguf_file> gguf_file::parse(const std::string& name, const uint8_t* data, size_t size) {
  std::shared_ptr<gguf_file> f(new gguf_file());
  f->path_ = name;
  f->parse_all(data, size);
  return f;
}


void gguf_file::fail(const std::string& where, const std::string& reason) const {
  throw gguf_error(path_, where, reason);
}

void gguf_file::parse_all(const uint8_t* data, size_t size) {
  cursor c(*this, data, size);

  // Header.
  c.at("header");
  uint32_t magic = c.u32("magic");
  if (magic != gguf_magic)
    fail("header", "bad magic " + quote_magic(magic) + " (expected \"GGUF\")");
  version_ = c.u32("version");
  if (version_ < 2 || version_ > 3) {
    std::string reason = "unsupported version " + std::to_string(version_) + " (supported: 2, 3)";
    if (version_ == 1)
      reason += "; GGUF v1 used 32-bit counts, re-convert the model";
    else if ((version_ & 0x00ffffffu) == 0)
      reason += "; a big-endian file?";
    fail("header", reason);
  }
  uint64_t n_tensors = c.u64("tensor count");
  uint64_t n_kv = c.u64("metadata count");
  if (n_kv > c.left() / min_kv_bytes)
    fail("header", "metadata count " + std::to_string(n_kv) + " cannot fit in the "
                       + std::to_string(c.left()) + " bytes left");
  if (n_tensors > c.left() / min_tensor_info_bytes)
    fail("header", "tensor count " + std::to_string(n_tensors) + " cannot fit in the "
                       + std::to_string(c.left()) + " bytes left");

  // Metadata.
  for (uint64_t k = 0; k < n_kv; ++k) {
    c.at("metadata #" + std::to_string(k));
    std::string key = c.string("key");
    if (key.empty())
      c.fail("empty key");
    c.at(key);
    if (kv_.count(key))
      c.fail("duplicate key");
    uint32_t t = c.u32("value type");
    if (!is_known(t))
      c.fail("unknown value type " + std::to_string(t));
    value v;
    v.type = static_cast<value_type>(t);
    read_value(c, v);
    kv_.emplace(std::move(key), std::move(v));
  }

  if (auto a = get_int("general.alignment")) {
    if (*a <= 0 || (*a & (*a - 1)) != 0)
      fail("general.alignment", "alignment " + std::to_string(*a) + " is not a power of two");
    alignment_ = static_cast<uint64_t>(*a);
  }

  // Tensor infos.
  tensors_.reserve(static_cast<size_t>(n_tensors));  // bounded by the file size, checked above
  for (uint64_t k = 0; k < n_tensors; ++k) {
    c.at("tensor #" + std::to_string(k));
    tensor_info t;
    t.name = c.string("tensor name");
    if (t.name.empty())
      c.fail("empty tensor name");
    c.at("tensor '" + t.name + "'");
    if (tensor_index_.count(t.name))
      c.fail("duplicate tensor name");

    uint32_t n_dims = c.u32("n_dims");
    if (n_dims < 1 || n_dims > max_dims)
      c.fail("n_dims " + std::to_string(n_dims) + " (must be 1 to " + std::to_string(max_dims) + ")");
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t raw = c.u64("dimension");
      auto dim = static_cast<int64_t>(raw);
      if (dim <= 0)
        c.fail("dimension " + std::to_string(d) + " is " + std::to_string(dim) + " (must be positive)");
      if (n_elements > std::numeric_limits<int64_t>::max() / dim)
        c.fail("element count overflows int64");
      n_elements *= dim;
      t.dims.push_back(dim);
    }

    uint32_t type = c.u32("type");
    auto dt = kernels::supported_dtype(type);
    if (!dt)
      c.fail("unsupported type " + kernels::to_string(static_cast<kernels::dtype>(type))
             + " (supported: " + supported_types() + ")");
    t.type = *dt;
    auto block = static_cast<int64_t>(kernels::block_elems(t.type));
    if (t.dims[0] % block != 0)
      c.fail("row length " + std::to_string(t.dims[0]) + " is not a multiple of the "
             + kernels::to_string(t.type) + " block size " + std::to_string(block));
    uint64_t blocks_per_row = static_cast<uint64_t>(t.dims[0] / block);
    uint64_t rows = static_cast<uint64_t>(n_elements / t.dims[0]);
    uint64_t bytes_per_block = kernels::block_bytes(t.type);
    if (blocks_per_row > std::numeric_limits<uint64_t>::max() / bytes_per_block
        || blocks_per_row * bytes_per_block > std::numeric_limits<uint64_t>::max() / rows)
      c.fail("size in bytes overflows 64 bits");
    t.n_bytes = static_cast<uint64_t>(kernels::row_bytes(t.type, t.dims[0])) * rows;

    t.offset = c.u64("offset");
    if (t.offset % alignment_ != 0)
      c.fail("offset " + std::to_string(t.offset) + " is not a multiple of the alignment "
             + std::to_string(alignment_));
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // Tensor data: from the first multiple of the alignment after the infos.
  // pos <= size and alignment <= 2^63, so this cannot overflow.
  uint64_t data_start = c.pos() + (alignment_ - c.pos() % alignment_) % alignment_;
  for (auto& t : tensors_) {
    if (data_start > size || t.offset > size - data_start || t.n_bytes > size - data_start - t.offset)
      fail("tensor '" + t.name + "'",
           "data runs past the end of the file (" + std::to_string(t.n_bytes) + " bytes at offset "
               + std::to_string(t.offset) + " of the data section, which starts at "
               + std::to_string(data_start) + "; the file has " + std::to_string(size) + " bytes)");
    t.data = data + data_start + t.offset;
  }
}

const value* gguf_file::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const tensor_info* gguf_file::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::optional<std::string> gguf_file::get_string(const std::string& key) const {
  const value* v = find(key);
  if (!v)
    return std::nullopt;
  if (v->type != value_type::string)
    fail(key, "expected a string, found " + describe(*v));
  return v->s;
}

std::optional<int64_t> gguf_file::get_int(const std::string& key) const {
  const value* v = find(key);
  if (!v)
    return std::nullopt;
  if (is_unsigned(v->type)) {
    if (v->u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(key, "value " + std::to_string(v->u) + " does not fit in int64");
    return static_cast<int64_t>(v->u);
  }
  if (!is_signed(v->type))
    fail(key, "expected an integer, found " + describe(*v));
  return v->i;
}

std::optional<double> gguf_file::get_float(const std::string& key) const {
  const value* v = find(key);
  if (!v)
    return std::nullopt;
  if (!is_unsigned(v->type) && !is_signed(v->type) && !is_float(v->type))
    fail(key, "expected a number, found " + describe(*v));
  return v->f;
}

std::optional<bool> gguf_file::get_bool(const std::string& key) const {
  const value* v = find(key);
  if (!v)
    return std::nullopt;
  if (v->type != value_type::boolean)
    fail(key, "expected a bool, found " + describe(*v));
  return v->u != 0;
}

const std::vector<std::string>* gguf_file::get_strings(const std::string& key) const {
  const value* v = find(key);
  if (!v)
    return nullptr;
  if (v->type != value_type::array || v->elem_type != value_type::string)
    fail(key, "expected an array of strings, found " + describe(*v));
  return &v->strings;
}

const std::vector<double>* gguf_file::get_numbers(const std::string& key) const {
  const value* v = find(key);
  if (!v)
    return nullptr;
  if (v->type != value_type::array || v->elem_type == value_type::string
      || v->elem_type == value_type::array)
    fail(key, "expected an array of numbers, found " + describe(*v));
  return &v->numbers;
}

}  // namespace llmux::engine::gguf
