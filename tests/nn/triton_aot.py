"""Compile every variant of the RHN step kernels ahead of time for an H100 (sm_90), with no
GPU: run as a script (outside the Triton interpreter); prints one JSON line per variant.

Used by ``test_rhn_triton.py::test_kernels_compile_for_an_h100``: the interpreter accepts
some programs the real compiler refuses (dtype mixes, constexpr misuse), so this is the
check that the GPU path builds.
"""

from __future__ import annotations

import itertools
import json
import os

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from rhn.nn import rhn_triton
from rhn.nn.rhn_fused import gemm_reads_a_copy

H100 = GPUTarget("cuda", 90, 32)
# (state dtype, compute dtype): the state's tensors vs the GEMM operands.
PRECISIONS = [("fp32", "fp32"), ("fp32", "bf16"), ("fp32", "fp16"), ("fp64", "fp64")]
GEMM_OPERANDS = {"a_ptr", "out_in_ptr", "da_ptr", "g_ptr"}
TORCH_DTYPES = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def compile_variant(kernel, state: str, compute: str, constexprs: dict) -> dict:
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name == "numel":
            signature[name] = "i32"
        else:
            signature[name] = "*" + (compute if name in GEMM_OPERANDS else state)
    compiled = triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs), target=H100
    )
    return {
        "kernel": kernel.__name__,
        "state": state,
        "compute": compute,
        **{k: v for k, v in constexprs.items() if k not in ("HIDDEN", "BLOCK_SIZE")},
        "cubin_bytes": len(compiled.asm["cubin"]),
        "ptx": compiled.asm["ptx"],
    }


def main() -> None:
    for (state, compute), coupled, dropout in itertools.product(
        PRECISIONS, (True, False), (True, False)
    ):
        shared = {"HIDDEN": 830, "BLOCKS": 2 if coupled else 3, "COUPLED": coupled}
        shared |= {"DROPOUT": dropout, "BLOCK_SIZE": rhn_triton.BLOCK}
        mask = torch.empty(0) if dropout else None
        separate = gemm_reads_a_copy(mask, TORCH_DTYPES[compute], TORCH_DTYPES[state])
        forward = compile_variant(
            rhn_triton._forward_kernel, state, compute, shared | {"WRITE_INPUT": separate}
        )
        backward = compile_variant(
            rhn_triton._backward_kernel, state, compute, shared | {"HAS_G": separate}
        )
        for result in (forward, backward):
            print(json.dumps(result))


if __name__ == "__main__":
    main()
