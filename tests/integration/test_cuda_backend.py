"""The cuda backend on a machine without a GPU: `llmux` itself links nothing
of CUDA, loads libllmux_cuda.so only when a unit asks for backend = "cuda",
and a node that cannot run it stops at startup saying why, in the CUDA
runtime's words. (On a GPU machine tests/cuda covers the backend itself.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import SOURCE_DIR, free_port, solo_config

STORIES = SOURCE_DIR.parent / "shared" / "models" / "stories260K" / "stories260K.gguf"


def _config(tmp_path: Path, unit_extra: str = "") -> Path:
    http, node, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / "cuda.toml"
    cfg.write_text(solo_config(http, node, admin) + f"""
[[models]]
name = "stories"
backend = "cuda"
file = "{STORIES}"

[[units]]
name = "gpu0"
node = "solo"
backend = "cuda"
kv_blocks = 1024
{unit_extra}
models = [ {{ name = "stories" }} ]
""")
    return cfg


def _serve(llmux_bin, cfg, env=None):
    return subprocess.run([str(llmux_bin), "serve", "--config", str(cfg)], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.fixture
def no_gpu():
    if Path("/dev/nvidia0").exists():
        pytest.skip("this machine has a GPU: tests/cuda runs the backend there")


def test_llmux_links_no_cuda_library(llmux_bin):
    libs = subprocess.run(["ldd", str(llmux_bin)], capture_output=True, text=True).stdout
    assert "libcuda" not in libs and "libcublas" not in libs and "libcudart" not in libs, libs


def test_the_plugin_finds_every_llmux_symbol_it_needs_in_llmux(llmux_bin):
    # The plugin resolves engine code against llmux's exports; code only the
    # plugin uses must be compiled into it, or dlopen fails on every machine.
    plugin = Path(llmux_bin).parent / "libllmux_cuda.so"
    if not plugin.exists():
        pytest.skip("this build has no cuda backend (LLMUX_CUDA off: no nvcc)")

    def symbols(path, kind):
        out = subprocess.run(["nm", "-D", kind, str(path)], capture_output=True, text=True, check=True).stdout
        return {line.split()[-1] for line in out.splitlines() if line.strip()}

    needed = {s for s in symbols(plugin, "--undefined-only") if s.startswith("_ZN5llmux")}
    assert needed, "the plugin uses no llmux symbol: the check would mean nothing"
    missing = needed - symbols(llmux_bin, "--defined-only")
    assert not missing, sorted(missing)


def test_a_cuda_unit_without_a_gpu_stops_the_node_saying_why(llmux_bin, tmp_path, no_gpu):
    plugin = Path(llmux_bin).parent / "libllmux_cuda.so"
    if not plugin.exists():
        pytest.skip("this build has no cuda backend (LLMUX_CUDA off: no nvcc)")
    r = _serve(llmux_bin, _config(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "model 'stories': backend 'cuda' is unavailable: no usable CUDA device" in out, out


def test_a_tensor_parallel_unit_without_gpus_stops_the_node_saying_why(llmux_bin, tmp_path, no_gpu):
    plugin = Path(llmux_bin).parent / "libllmux_cuda.so"
    if not plugin.exists():
        pytest.skip("this build has no cuda backend (LLMUX_CUDA off: no nvcc)")
    r = _serve(llmux_bin, _config(tmp_path, "devices = [0, 1]"))
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    # Checked before NCCL is loaded: the device is what is missing.
    assert "model 'stories': backend 'cuda' is unavailable: no usable CUDA device" in out, out


def test_a_missing_cuda_library_is_named(llmux_bin, tmp_path):
    env = dict(os.environ, LLMUX_CUDA_PLUGIN=str(tmp_path / "nowhere" / "libllmux_cuda.so"))
    r = _serve(llmux_bin, _config(tmp_path), env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    # A build without nvcc says the backend is not built; one with it names the file it could not load.
    assert ("cannot load " + env["LLMUX_CUDA_PLUGIN"] in out) or ("not available in this build" in out), out
