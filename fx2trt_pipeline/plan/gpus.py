"""The GPUs a plan is estimated for: public datasheet peaks, nothing measured.

Each :class:`GPU` holds four figures from NVIDIA's own datasheets and architecture whitepapers: memory
bandwidth, dense FP16 tensor throughput, dense INT8 tensor throughput and FP32 non-tensor throughput. All are
**dense** (no 2:4 structured sparsity; datasheets print the sparse figure beside it, marked ``*``, at twice the
dense one). Where a datasheet distinguishes FP16 tensor throughput by accumulator, ``fp16_tensor_flops`` is the
**FP32-accumulate** figure (GeForce cards run it at half their FP16-accumulate rate; datacenter cards at full
rate) and ``fp16_acc16_tensor_flops`` keeps the FP16-accumulate one. Which accumulator TensorRT's FP16 kernels
use is not in the plan, so the estimate takes the slower, FP32-accumulate figure.

Provenance: the figures were written from the named NVIDIA documents as remembered, then cross-checked
against public copies of their tables found with a search tool (third-party reprints of the datasheets, not
NVIDIA's PDFs themselves); ``GPU.provenance`` says which held for each card. Boost-clock arithmetic agrees
with each (e.g. RTX 4090: 128 SMs x 1024 FP16 FLOP/clk x 2.52 GHz = 330 TFLOPS FP16-accumulate).

Example:
    >>> gpu("L4").memory_bandwidth, gpu("l4").int8_tensor_ops
    (300000000000.0, 242500000000000.0)
    >>> gpu("L4").peak("Int8") == gpu("L4").int8_tensor_ops, gpu("RTX 4090").peak("Half") / 1e12
    (True, 165.2)
    >>> gpu("H9000")
    Traceback (most recent call last):
    ...
    fx2trt_pipeline.errors.ConfigError: Unknown GPU 'H9000'; known: RTX 4090, RTX 4080, RTX 3090, L40S, L4, A10, A100
"""

from __future__ import annotations

from dataclasses import dataclass

from fx2trt_pipeline.errors import ConfigError

_G = 1e9  # GB/s -> bytes/s (decimal, as datasheets count)
_T = 1e12  # TFLOPS / TOPS -> per second


@dataclass(frozen=True)
class GPU:
    """One GPU's datasheet peaks (per second; dense, no sparsity).

    Attributes:
        name: the card as NVIDIA names it (``"RTX 4090"``).
        architecture: ``"Ada Lovelace"``, ``"Ampere"``.
        memory_bandwidth: bytes/s of device memory.
        fp16_tensor_flops: FLOP/s of FP16 tensor-core math, dense, FP32 accumulate.
        int8_tensor_ops: OP/s of INT8 tensor-core math, dense (an op is a multiply or an add, like a FLOP).
        fp32_flops: FLOP/s of FP32 on the CUDA cores (non-tensor; TF32 tensor math is not assumed).
        fp16_acc16_tensor_flops: FP16 tensor FLOP/s with FP16 accumulate, dense (informative, unused).
        source: the NVIDIA document the figures come from.
        provenance: how they were obtained (recalled from the document; cross-checked or not).
    """

    name: str
    architecture: str
    memory_bandwidth: float
    fp16_tensor_flops: float
    int8_tensor_ops: float
    fp32_flops: float
    fp16_acc16_tensor_flops: float
    source: str
    provenance: str

    def peak(self, dtype: str | None) -> float:
        """Peak math rate (FLOP/s or OP/s) for a compute layer running in TensorRT dtype ``dtype``.

        ``Int8`` takes the INT8 tensor rate; ``FP8`` too (Ada runs FP8 at the INT8 rate with FP16
        accumulate; an upper bound elsewhere); ``Half`` / ``BFloat16`` the FP16 tensor rate (BF16 runs
        at the FP16 rate on Ampere and Ada); anything else (``Float``) the FP32 non-tensor rate.
        """
        if dtype in ("Int8", "FP8", "Int4", "FP4"):
            return self.int8_tensor_ops
        if dtype in ("Half", "BFloat16", "BF16"):
            return self.fp16_tensor_flops
        return self.fp32_flops


_RECALLED = "recalled from the document; not cross-checked"
_CHECKED = "recalled from the document; every figure cross-checked with public reprints of its table (search)"


def _partly(checked: str) -> str:
    return f"recalled from the document; {checked} cross-checked with public reprints of its table (search)"


GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        # NVIDIA ADA GPU ARCHITECTURE whitepaper (v2.01), Appendix A, GeForce RTX 4090 table: 1008 GB/s;
        # FP16 tensor 330.3 TFLOPS FP16 acc / 165.2 FP32 acc; INT8 tensor 660.6 TOPS; FP32 82.6 TFLOPS.
        GPU(
            "RTX 4090",
            "Ada Lovelace",
            1008 * _G,
            165.2 * _T,
            660.6 * _T,
            82.6 * _T,
            330.3 * _T,
            "NVIDIA ADA GPU ARCHITECTURE whitepaper v2.01, Appendix A (GeForce RTX 4090)",
            _partly("bandwidth, FP32, FP32-accumulate FP16 and INT8 figures"),
        ),
        # Same whitepaper, GeForce RTX 4080 (16 GB) table: 716.8 GB/s; FP16 tensor 194.9 FP16 acc / 97.5 FP32
        # acc; INT8 389.9 TOPS; FP32 48.7 TFLOPS.
        GPU(
            "RTX 4080",
            "Ada Lovelace",
            716.8 * _G,
            97.5 * _T,
            389.9 * _T,
            48.7 * _T,
            194.9 * _T,
            "NVIDIA ADA GPU ARCHITECTURE whitepaper v2.01, Appendix A (GeForce RTX 4080 16GB)",
            _RECALLED,
        ),
        # NVIDIA AMPERE GA102 GPU ARCHITECTURE whitepaper (v2.0), Appendix A, GeForce RTX 3090: 936 GB/s;
        # FP16 tensor 142 FP16 acc / 71 FP32 acc; INT8 tensor 284 TOPS; FP32 35.6 TFLOPS.
        GPU(
            "RTX 3090",
            "Ampere",
            936 * _G,
            71 * _T,
            284 * _T,
            35.6 * _T,
            142 * _T,
            "NVIDIA AMPERE GA102 GPU ARCHITECTURE whitepaper v2.0, Appendix A (GeForce RTX 3090)",
            _partly("bandwidth, FP32 and FP16-accumulate tensor figures"),
        ),
        # NVIDIA L40S datasheet: 864 GB/s; FP16 tensor 362.05 | 733* TFLOPS; INT8 733 | 1,466* TOPS;
        # FP32 91.6 TFLOPS (datacenter Ada: FP32 accumulate at full rate, so both FP16 figures agree).
        GPU(
            "L40S",
            "Ada Lovelace",
            864 * _G,
            362.05 * _T,
            733 * _T,
            91.6 * _T,
            362.05 * _T,
            "NVIDIA L40S datasheet",
            _CHECKED,
        ),
        # NVIDIA L4 Tensor Core GPU datasheet: 300 GB/s; FP16 tensor 242* TFLOPS, INT8 485* TOPS (sparse only
        # printed: dense is half, 121 and 242.5); FP32 30.3 TFLOPS.
        GPU(
            "L4",
            "Ada Lovelace",
            300 * _G,
            121 * _T,
            242.5 * _T,
            30.3 * _T,
            121 * _T,
            "NVIDIA L4 Tensor Core GPU datasheet (sparse figures halved)",
            _CHECKED,
        ),
        # NVIDIA A10 Tensor Core GPU datasheet: 600 GB/s; FP16 tensor 125 | 250* TFLOPS; INT8 250 | 500* TOPS;
        # FP32 31.2 TFLOPS.
        GPU(
            "A10",
            "Ampere",
            600 * _G,
            125 * _T,
            250 * _T,
            31.2 * _T,
            125 * _T,
            "NVIDIA A10 Tensor Core GPU datasheet",
            _partly("bandwidth and FP32 figures"),
        ),
        # NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM column: 2,039 GB/s; FP16 tensor 312 | 624*
        # TFLOPS; INT8 624 | 1,248* TOPS; FP32 19.5 TFLOPS.
        GPU(
            "A100",
            "Ampere",
            2039 * _G,
            312 * _T,
            624 * _T,
            19.5 * _T,
            312 * _T,
            "NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM)",
            _RECALLED,
        ),
    )
}

#: The cards issue 21 names; estimates default to these.
DEFAULT_GPUS: tuple[str, ...] = ("RTX 4090", "L40S", "L4", "A10")


def gpu(name: str | GPU) -> GPU:
    """The table's entry for ``name`` (case and spaces ignored: ``"rtx4090"`` works); a GPU passes through.

    Raises:
        ConfigError: no such GPU; the message lists the known names.
    """
    if isinstance(name, GPU):
        return name
    key = name.replace(" ", "").lower()
    for entry in GPUS.values():
        if entry.name.replace(" ", "").lower() == key:
            return entry
    raise ConfigError(f"Unknown GPU {name!r}; known: {', '.join(GPUS)}")


__all__ = ["DEFAULT_GPUS", "GPU", "GPUS", "gpu"]
