#include "engine/hf_model.hpp"


#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

namespace llmux::engine {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using gguf::gguf_error;
using gguf::tensor_info;
using gguf::value;
using gguf::value_type;
using kernels::dtype;

[[noreturn]] void fail(const std::string& file, const std::string& where, const std::string& reason) {
  throw gguf_error(file, where, reason);
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    fail(path, "open", "cannot read it");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path, "json", e.what());
  }
}

// ------------------------------------------------------------ metadata --

value v_string(std::string s) {
  value v;
  v.type = value_type::string;
  v.s = std::move(s);
  return v;
}
value v_int(int64_t i) {
  value v;
  v.type = value_type::i64;
  v.i = i;
  v.f = static_cast<double>(i);
  return v;
}
value v_float(double f) {
  value v;
  v.type = value_type::f64;
  v.f = f;
  return v;
}
value v_bool(bool b) {
  value v;
  v.type = value_type::boolean;
  v.u = b ? 1 : 0;
  return v;
}
value v_strings(std::vector<std::string> s) {
  value v;
  v.type = value_type::array;
  v.elem_type = value_type::string;
  v.count = s.size();
  v.strings = std::move(s);
  return v;
}
value v_numbers(std::vector<double> n) {
  value v;
  v.type = value_type::array;
  v.elem_type = value_type::i32;
  v.count = n.size();
  v.numbers = std::move(n);
  return v;
}

// --------------------------------------------------------- safetensors --

struct st_tensor {
  std::string file;
  dtype type = dtype::f32;
  std::vector<int64_t> shape;  ///< row-major, as safetensors (and torch) give it
  const uint8_t* data = nullptr;
  size_t bytes = 0;
};

/// The tensors of one .safetensors file: an 8-byte little-endian header
/// length, the JSON header, then the data the header's offsets point into.
void read_safetensors(const std::string& path, std::map<std::string, st_tensor>& out,
                      std::vector<std::shared_ptr<const void>>& keep) {
  auto m = gguf::map_file(path);
  const uint8_t* base = m->data;
  if (m->size < 8)
    fail(path, "header", "shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | base[i];
  if (n > m->size - 8)
    fail(path, "header", "its length " + std::to_string(n) + " runs past the file");
  json header = json::parse(base + 8, base + 8 + n, nullptr, false);
  if (!header.is_object())
    fail(path, "header", "not a JSON object");
  const uint8_t* data = base + 8 + n;
  const size_t data_size = m->size - 8 - n;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__")
      continue;
    const std::string where = "tensor '" + it.key() + "'";
    const json& t = it.value();
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets"))
      fail(path, where, "needs dtype, shape and data_offsets");
    st_tensor s;
    s.file = path;
    const std::string dt = t["dtype"].is_string() ? t["dtype"].get<std::string>() : "";
    if (dt == "F32")
      s.type = dtype::f32;
    else if (dt == "F16")
      s.type = dtype::f16;
    else if (dt == "BF16")
      s.type = dtype::bf16;
    else
      fail(path, where, "dtype '" + dt + "' is not supported (F32, F16 and BF16 are)");
    int64_t elems = 1;
    for (const auto& d : t["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (int64_t{1} << 40))
        fail(path, where, "a bad shape");
      s.shape.push_back(d.get<int64_t>());
      elems *= s.shape.back();
    }
    const json& off = t["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(path, where, "data_offsets must be two offsets");
    const auto b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size)
      fail(path, where, "its data lies outside the file");
    s.bytes = static_cast<size_t>(e - b);
    if (s.bytes != static_cast<size_t>(elems) * (s.type == dtype::f32 ? 4 : 2))
      fail(path, where, "its data is " + std::to_string(s.bytes) + " bytes for " + std::to_string(elems)
                          + " elements of " + dt);
    s.data = data + b;
    if (!out.emplace(it.key(), std::move(s)).second)
      fail(path, where, "appears in two files");
  }
  keep.push_back(m);
}

// ------------------------------------------------------------- weights --

/// HF's name of a weight → GGUF's ("" for one the engine does not read,
/// such as rotary_emb.inv_freq, which it computes).
std::string gguf_name(const std::string& hf) {
  static const std::pair<const char*, const char*> layer_names[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  if (hf == "model.embed_tokens.weight")
    return "token_embd.weight";
  if (hf == "model.norm.weight")
    return "output_norm.weight";
  if (hf == "lm_head.weight")
    return "output.weight";
  const std::string prefix = "model.layers.";
  if (hf.rfind(prefix, 0) == 0) {
    size_t dot = hf.find('.', prefix.size());
    if (dot != std::string::npos) {
      const std::string idx = hf.substr(prefix.size(), dot - prefix.size());
      const std::string rest = hf.substr(dot + 1);
      if (rest == "self_attn.rotary_emb.inv_freq")
        return "";
      for (const auto& [from, to] : layer_names)
        if (rest == from)
          return "blk." + idx + "." + to;
    }
  }
  return hf;  // unknown: kept under its own name, so the model refuses it by name
}

float element(const st_tensor& t, size_t i) {
  if (t.type == dtype::f32) {
    float f;
    std::memcpy(&f, t.data + i * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, t.data + i * 2, 2);
  return t.type == dtype::f16 ? kernels::fp16_to_fp32(h) : kernels::bf16_to_fp32(h);
}

}  // namespace

std::shared_ptr<gguf::gguf_file> open_hf_directory(const std::string& dir, bool weights) {
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  const json cfg = read_json(cfg_path);
  std::vector<std::shared_ptr<const void>> keep;
  std::map<std::string, value> kv;

  // config.json → the architecture's keys.
  auto arch_of = [&]() -> std::string {
    std::string a = cfg.contains("architectures") && cfg["architectures"].is_array() && !cfg["architectures"].empty()
                      && cfg["architectures"][0].is_string()
                      ? cfg["architectures"][0].get<std::string>()
                      : "";
    if (a == "LlamaForCausalLM" || a == "MistralForCausalLM")
      return "llama";
    if (a == "Qwen2ForCausalLM")
      return "qwen2";
    fail(cfg_path, "architectures",
         "'" + a + "' is not supported (LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM are)");
  };
  const std::string arch = arch_of();
  auto need_int = [&](const char* key) {
    if (!cfg.contains(key) || !cfg[key].is_number_integer() || cfg[key].get<int64_t>() <= 0)
      fail(cfg_path, key, "missing or not a positive integer");
    return cfg[key].get<int64_t>();
  };
  if (cfg.contains("rope_scaling") && !cfg["rope_scaling"].is_null())
    fail(cfg_path, "rope_scaling", "RoPE scaling is not supported yet (the forward pass does not run it)");
  const int64_t n_head = need_int("num_attention_heads");
  const int64_t n_embd = need_int("hidden_size");
  const int64_t n_head_kv = cfg.contains("num_key_value_heads") ? need_int("num_key_value_heads") : n_head;
  const bool has_head_dim = cfg.contains("head_dim") && cfg["head_dim"].is_number_integer();
  if (!has_head_dim && n_embd % n_head != 0)
    fail(cfg_path, "num_attention_heads", "hidden_size is not a multiple of it, and there is no head_dim");
  const int64_t head_dim = has_head_dim ? cfg["head_dim"].get<int64_t>() : n_embd / n_head;
  kv["general.architecture"] = v_string(arch);
  kv["general.name"] = v_string(fs::path(dir).filename().string());
  kv[arch + ".context_length"] = v_int(need_int("max_position_embeddings"));
  kv[arch + ".embedding_length"] = v_int(n_embd);
  kv[arch + ".block_count"] = v_int(need_int("num_hidden_layers"));
  kv[arch + ".feed_forward_length"] = v_int(need_int("intermediate_size"));
  kv[arch + ".attention.head_count"] = v_int(n_head);
  kv[arch + ".attention.head_count_kv"] = v_int(n_head_kv);
  kv[arch + ".attention.key_length"] = v_int(head_dim);
  kv[arch + ".vocab_size"] = v_int(need_int("vocab_size"));
  if (cfg.contains("rms_norm_eps") && cfg["rms_norm_eps"].is_number())
    kv[arch + ".attention.layer_norm_rms_epsilon"] = v_float(cfg["rms_norm_eps"].get<double>());
  if (cfg.contains("rope_theta") && cfg["rope_theta"].is_number())
    kv[arch + ".rope.freq_base"] = v_float(cfg["rope_theta"].get<double>());

  // Weights (unless only the metadata is wanted): one file, or the shards
  // the index names.
  std::map<std::string, st_tensor> tensors;
  if (weights) {
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    std::set<std::string> files;
    if (fs::exists(index)) {
      const json idx = read_json(index.string());
      if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
        fail(index.string(), "weight_map", "missing");
      for (const auto& f : idx["weight_map"])
        if (f.is_string())
          files.insert(f.get<std::string>());
    } else {
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".safetensors")
          files.insert(e.path().filename().string());
    }
    if (files.empty())
      fail(dir, "weights", "no .safetensors file");
    for (const auto& f : files) {
      if (f.find('/') != std::string::npos || f == "..")
        fail(index.string(), "weight_map", "'" + f + "' is not a file of the directory");
      read_safetensors((fs::path(dir) / f).string(), tensors, keep);
    }
  }

  // Tied embeddings (transformers' default for these models is untied): the
  // output is the embedding, and an lm_head in the files is not read.
  const bool tied = cfg.contains("tie_word_embeddings") && cfg["tie_word_embeddings"].is_boolean()
                    && cfg["tie_word_embeddings"].get<bool>();
  if (weights && !tied && !tensors.count("lm_head.weight"))
    fail(cfg_path, "tie_word_embeddings", "false (or absent), but the weights have no lm_head.weight");
  std::vector<tensor_info> infos;
  for (auto& [hf, t] : tensors) {
    const std::string name = gguf_name(hf);
    if (name.empty() || (tied && hf == "lm_head.weight"))
      continue;
    tensor_info info;
    info.name = name;
    info.type = t.type;
    info.dims.assign(t.shape.rbegin(), t.shape.rend());  // GGUF: the contiguous dimension first
    info.data = t.data;
    info.n_bytes = t.bytes;
    const bool vector = t.shape.size() == 1;
    const bool is_q = name.find(".attn_q.weight") != std::string::npos;
    const bool is_k = name.find(".attn_k.weight") != std::string::npos;
    if (vector && t.type != dtype::f32) {
      // Norms and biases: the engine reads them as F32.
      auto buf = std::shared_ptr<float[]>(new float[static_cast<size_t>(t.shape[0])]);
      for (int64_t i = 0; i < t.shape[0]; ++i)
        buf[static_cast<size_t>(i)] = element(t, static_cast<size_t>(i));
      info.type = dtype::f32;
      info.data = reinterpret_cast<const uint8_t*>(buf.get());
      info.n_bytes = static_cast<uint64_t>(t.shape[0]) * 4;
      keep.push_back(std::shared_ptr<const void>(buf, buf.get()));
    } else if (arch == "llama" && (is_q || is_k) && t.shape.size() == 2) {
      // llama.cpp's converter permutes these rows so that each head's two
      // halves interleave (GGUF's RoPE rotates adjacent pairs): row
      // h·d + 2j + s of the GGUF tensor is row h·d + s·d/2 + j of HF's.
      const int64_t heads = is_q ? n_head : n_head_kv;
      const int64_t rows = t.shape[0];
      if (rows % heads != 0 || (rows / heads) % 2 != 0)
        fail(t.file, "tensor '" + hf + "'", "rows do not split into heads of even size");
      const int64_t d = rows / heads;
      const size_t row = t.bytes / static_cast<size_t>(rows);
      auto buf = std::shared_ptr<uint8_t[]>(new uint8_t[t.bytes]);
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t j = 0; j < d / 2; ++j)
          for (int64_t s = 0; s < 2; ++s)
            std::memcpy(buf.get() + static_cast<size_t>(h * d + 2 * j + s) * row,
                        t.data + static_cast<size_t>(h * d + s * (d / 2) + j) * row, row);
      info.data = buf.get();
      keep.push_back(std::shared_ptr<const void>(buf, buf.get()));
    }
    infos.push_back(std::move(info));
  }
  // Tokenizer.
  const std::string tok_path = (fs::path(dir) / "tokenizer.json").string();
  const json tok = read_json(tok_path);
  if (!tok.contains("model") || !tok["model"].is_object())
    fail(tok_path, "model", "missing");
  const json& model = tok["model"];
  // A byte-level BPE's pre-tokenizer, as llama.cpp names it.
  auto pre_of = [&]() -> std::string {
    const json& p = tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : json();
    auto is_byte_level = [](const json& x, bool regex) {
      return x.is_object() && x.value("type", "") == "ByteLevel" && x.value("use_regex", true) == regex;
    };
    if (is_byte_level(p, true))
      return "gpt-2";
    if (p.is_object() && p.value("type", "") == "Sequence" && p.contains("pretokenizers")) {
      const json& seq = p["pretokenizers"];
      if (seq.size() == 2 && seq[0].value("type", "") == "Digits" && seq[0].value("individual_digits", false)
          && is_byte_level(seq[1], true))
        return "smollm";
      if (seq.size() == 2 && seq[0].value("type", "") == "Split" && is_byte_level(seq[1], false)) {
        const json& pat = seq[0]["pattern"];
        const std::string rx = pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()
                                 ? pat["Regex"].get<std::string>()
                                 : "";
        if (rx.find("\\p{N}{1,3}") != std::string::npos)
          return "llama-bpe";
        if (rx.find("\\p{N}|") != std::string::npos)
          return "qwen2";
      }
    }
    fail(tok_path, "pre_tokenizer", "not one llmux reads (" + p.dump().substr(0, 200) + ")");
  };
  const std::string type = model.value("type", "");
  if (type != "BPE")
    fail(tok_path, "model.type", "'" + type + "' is not supported (BPE is: byte-level, or SentencePiece-style)");
  // SentencePiece-style (Llama 2, Mistral): a BPE over "▁"-joined words with
  // bytes as <0xNN> fallback tokens, read as llama.cpp's SentencePiece
  // tokenizer; else byte-level (GPT-2 style).
  const bool spm = model.value("byte_fallback", false);
  std::map<int64_t, std::string> by_id;
  std::map<int64_t, int> types;
  if (!model.contains("vocab") || !model["vocab"].is_object())
    fail(tok_path, "model.vocab", "missing");
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      fail(tok_path, "model.vocab", "'" + it.key() + "' has no token id");
    by_id[it.value().get<int64_t>()] = it.key();
  }
  if (tok.contains("added_tokens"))
    for (const auto& a : tok["added_tokens"]) {
      if (!a.contains("id") || !a.contains("content") || !a["id"].is_number_integer() || !a["content"].is_string())
        fail(tok_path, "added_tokens", "an entry needs an id and a content");
      by_id[a["id"].get<int64_t>()] = a["content"].get<std::string>();
      types[a["id"].get<int64_t>()] = a.value("special", false) ? 3 : 4;  // control : user-defined
    }
  const int64_t n_tokens = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  if (static_cast<int64_t>(by_id.size()) != n_tokens)
    fail(tok_path, "model.vocab", "token ids are not 0.." + std::to_string(n_tokens - 1) + " without gaps");
  std::vector<std::string> merges;
  if (model.contains("merges"))
    for (const auto& m : model["merges"]) {
      if (m.is_string())
        merges.push_back(m.get<std::string>());
      else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      else
        fail(tok_path, "model.merges", "a merge is neither \"a b\" nor [a, b]");
    }
  // A model whose embedding has more rows than the tokenizer has tokens
  // (Qwen2: 151,936 against 151,665) gets the rest as unused [PADn] tokens,
  // as llama.cpp's converter writes them.
  const int64_t rows = cfg["vocab_size"].get<int64_t>();
  for (int64_t id = n_tokens; id < rows; ++id) {
    by_id[id] = "[PAD" + std::to_string(id) + "]";
    types[id] = 5;  // unused
  }
  std::vector<std::string> tokens;
  std::vector<double> token_types;
  for (auto& [id, text] : by_id) {
    tokens.push_back(text);
    int t = types.count(id) ? types[id] : 1;
    if (spm && t == 1 && text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>')
      t = 6;  // a byte fallback token
    token_types.push_back(t);
  }
  std::map<std::string, int64_t> id_of;
  for (size_t i = 0; i < tokens.size(); ++i)
    id_of.emplace(tokens[i], static_cast<int64_t>(i));
  if (spm) {
    kv["tokenizer.ggml.model"] = v_string("llama");
    const std::string unk = model.contains("unk_token") && model["unk_token"].is_string()
                              ? model["unk_token"].get<std::string>()
                              : "";
    if (auto it = id_of.find(unk); it != id_of.end()) {
      kv["tokenizer.ggml.unknown_token_id"] = v_int(it->second);
      token_types[static_cast<size_t>(it->second)] = 2;
    }
    // SentencePiece merges the pair whose joined piece scores highest; HF's
    // conversion lists the merges in that order. So a piece's score is minus
    // the rank of the first merge that makes it (pieces no merge makes come
    // last: they are only ever single characters).
    std::vector<double> scores(tokens.size(), 0.0);
    std::vector<bool> scored(tokens.size(), false);
    for (size_t r = 0; r < merges.size(); ++r) {
      const auto sp = merges[r].find(' ');
      if (sp == std::string::npos)
        fail(tok_path, "model.merges", "'" + merges[r] + "' is not two pieces");
      auto it = id_of.find(merges[r].substr(0, sp) + merges[r].substr(sp + 1));
      if (it != id_of.end() && !scored[static_cast<size_t>(it->second)]) {
        scores[static_cast<size_t>(it->second)] = -static_cast<double>(r);
        scored[static_cast<size_t>(it->second)] = true;
      }
    }
    for (size_t i = 0; i < tokens.size(); ++i)
      if (!scored[i] && token_types[i] == 1)
        scores[i] = -static_cast<double>(merges.size() + i);
    kv["tokenizer.ggml.scores"] = v_numbers(std::move(scores));
    // A space before the text: the Prepend("▁") normalizer (older
    // conversions) or a Metaspace pre-tokenizer that prepends.
    bool prefix = false;
    std::function<void(const json&)> scan = [&](const json& x) {
      if (x.is_object()) {
        const std::string t = x.value("type", "");
        if (t == "Prepend" && x.value("prepend", "") == "\u2581")
          prefix = true;
        if (t == "Metaspace")
          prefix = x.contains("prepend_scheme") ? x["prepend_scheme"] != "never" : x.value("add_prefix_space", true);
        for (const auto& v : x)
          scan(v);
      } else if (x.is_array()) {
        for (const auto& v : x)
          scan(v);
      }
    };
    scan(tok.value("normalizer", json()));
    scan(tok.value("pre_tokenizer", json()));
    kv["tokenizer.ggml.add_space_prefix"] = v_bool(prefix);
  } else {
    kv["tokenizer.ggml.model"] = v_string("gpt2");
    kv["tokenizer.ggml.pre"] = v_string(pre_of());
    kv["tokenizer.ggml.merges"] = v_strings(std::move(merges));
  }
  kv["tokenizer.ggml.tokens"] = v_strings(std::move(tokens));
  kv["tokenizer.ggml.token_type"] = v_numbers(std::move(token_types));

  // tokenizer_config.json: special tokens, BOS, the chat template.
  const fs::path tc_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(tc_path)) {
    const json tc = read_json(tc_path.string());
    auto token_of = [&](const char* key, const char* gguf_key) {
      if (!tc.contains(key) || tc[key].is_null())
        return;
      const json& t = tc[key];
      const std::string text = t.is_string() ? t.get<std::string>() : t.value("content", "");
      auto it = id_of.find(text);
      if (it == id_of.end())
        fail(tc_path.string(), key, "'" + text + "' is not in the vocabulary");
      kv[gguf_key] = v_int(it->second);
    };
    token_of("bos_token", "tokenizer.ggml.bos_token_id");
    token_of("eos_token", "tokenizer.ggml.eos_token_id");
    token_of("unk_token", "tokenizer.ggml.unknown_token_id");
    token_of("pad_token", "tokenizer.ggml.padding_token_id");
    if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean())
      kv["tokenizer.ggml.add_bos_token"] = v_bool(tc["add_bos_token"].get<bool>());
    if (tc.contains("chat_template")) {
      const json& ct = tc["chat_template"];
      if (ct.is_string()) {
        kv["tokenizer.chat_template"] = v_string(ct.get<std::string>());
      } else if (ct.is_array()) {  // named templates: the default one
        for (const auto& named : ct)
          if (named.value("name", "") == "default" && named.contains("template"))
            kv["tokenizer.chat_template"] = v_string(named["template"].get<std::string>());
      }
    }
  }
  // Special tokens tokenizer_config.json leaves out (Qwen2 has no
  // bos_token there): config.json's ids.
  for (const auto& [key, gguf_key] : {std::pair<const char*, const char*>{"bos_token_id", "tokenizer.ggml.bos_token_id"},
                                      {"eos_token_id", "tokenizer.ggml.eos_token_id"}})
    if (!kv.count(gguf_key) && cfg.contains(key) && cfg[key].is_number_integer())
      kv[gguf_key] = v_int(cfg[key].get<int64_t>());
  // transformers' newer layout keeps the template beside it.
  const fs::path jinja_path = fs::path(dir) / "chat_template.jinja";
  if (!kv.count("tokenizer.chat_template") && fs::exists(jinja_path)) {
    std::ifstream in(jinja_path);
    kv["tokenizer.chat_template"] = v_string(std::string(std::istreambuf_iterator<char>(in), {}));
  }
  return gguf::gguf_file::assemble(dir, std::move(kv), std::move(infos), std::move(keep));
}

std::shared_ptr<gguf::gguf_file> open_model_file(const std::string& path, bool weights) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return open_hf_directory(path, weights);
  return gguf::gguf_file::open(path);
}

}  // namespace llmux::engine
