"""A registered fer-tune model as an ONNX file: exported with its preprocessing recorded, run, quantized to int8.

    write_onnx(module, "model.onnx", preprocessing)            # dynamic batch axis, metadata_props
    probabilities = run_onnx("model.onnx", images)             # uint8 [N, 48, 48] -> float32 [N, C]
    method = quantize_int8("model.onnx", "model.int8.onnx", calibration_images)

The graph is the registered one (the MLflow pt2 model, TTA included): it takes float32 pixel values
0..255 [batch, 1, 48, 48], scales and normalizes them itself, and returns class probabilities. Every
import of onnx, onnxruntime and onnxscript is in here, so only `fer-tune models export` pays for them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from fer_tune.constants import IMAGE_SIZE
from fer_tune.errors import FerTuneError

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
BATCH_AXIS = "batch"  # the name of the input's and output's first dimension in the ONNX graph
EXAMPLE_BATCH = 2  # torch.export specializes a dimension of size 0 or 1 to a constant: trace with 2
RUN_BATCH = 256  # images per onnxruntime (and torch) call when checking: memory stays flat on FER2013's 3,589
CALIBRATION_BATCH = 50  # images per calibration step of the int8 quantizer
# The int8 quantizer's ops: the convolutions and dense layers, where the time goes. Left to its default (every op
# it knows), it also quantizes the softmax and the TTA mean: probabilities in steps of 1/255, whose ties flip
# the labels of an undecided model (an untrained one kept 2 of 70 labels of its fp32 twin; with these ops, 68).
INT8_OPS = ["Conv", "Gemm", "MatMul"]
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # onnxscript: torch's dynamo ONNX exporter needs it
# The exporter warns that the model is "in training mode": a torch.export module cannot be put in eval
# mode (eval() raises NotImplementedError), and needs not be: its graph was exported in eval mode.
TRAINING_MODE_WARNING = r"Exporting a model while it is in training mode"


def check_export_packages() -> None:
    """One line naming the extra to install where the ONNX packages are missing (checked before any work)."""
    import importlib.util

    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise FerTuneError(
            f"ONNX export needs {', '.join(missing)}, not installed: pip install 'fer-tune[export]' "
            f"(or pip install {' '.join(missing)})"
        )


def write_onnx(module: torch.nn.Module, path: Path, preprocessing: dict[str, str]) -> int:
    """Export `module` (pixel values 0..255 [N, 1, 48, 48] -> probabilities) to `path`; its opset version.

    torch's dynamo exporter (torch.export, then onnxscript), not the TorchScript one (`dynamo=False`): the
    registered model is a torch.export graph already (MLflow's pt2), which torch.export traces again as it
    was traced once, while the TorchScript exporter is deprecated (the default changed in torch 2.9; it
    says so on every call). Both exported every model of fer_tune.core.models (all 14 with flip TTA;
    basic, model3, vgg and resnet18 with each TTA) within 2e-6 of torch, the TorchScript one 2-3x faster.
    A node ONNX has no function for is one line naming the op and its layer (`unsupported_layer`).
    """
    import onnx

    example = torch.zeros(EXAMPLE_BATCH, 1, IMAGE_SIZE, IMAGE_SIZE)
    batch = torch.export.Dim(BATCH_AXIS)  # any batch size: one face, or a camera's burst
    with _quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", TRAINING_MODE_WARNING, UserWarning)
        try:
            program = torch.onnx.export(
                module,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
        except torch.onnx.OnnxExporterError as err:
            raise FerTuneError(f"cannot export to ONNX: {unsupported_layer(err)}") from None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, preprocessing)
    onnx.save_model(proto, str(path))  # one file: weights inside (external data only matters past 2 GB)
    try:
        onnx.checker.check_model(str(path), full_check=True)  # the path form also checks the size limits
    except onnx.checker.ValidationError as err:
        raise FerTuneError(f"onnx.checker rejects the exported model: {_first_line(err)}") from None
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Add `props` to the metadata_props of the ONNX file at `path` (what its check measured, written after it)."""
    import onnx

    proto = onnx.load_model(str(path))
    merged = {entry.key: entry.value for entry in proto.metadata_props} | props
    onnx.helper.set_model_props(proto, merged)
    onnx.save_model(proto, str(path))


def unsupported_layer(err: Exception) -> str:
    """What the exporter could not translate, and in which layer: `no ONNX function for X in layer 1.conv (Conv2d)`.

    The exporter's message names the FX node but not the module it came from; the node itself, with its
    `nn_module_stack`, is a local of the exporter's frame that raised (torch/onnx/_internal/exporter/_core.py).
    """
    reason = _exporter_reason(err)
    for node in _traceback_nodes(err):
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        where, kind = stack[-1] if stack else ("", "")
        layer = f"layer {where} ({kind.rsplit('.', 1)[-1]})" if where else "the top-level module"
        if "No ONNX function" in reason:
            return f"no ONNX function for {node.target} in {layer}"
        return f"{node.target} in {layer}: {reason}"
    return reason


def _exporter_reason(err: Exception) -> str:
    """The line of the exporter's long report that says what failed (it opens with generic advice)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]  # its colour codes
    said = [line for line in lines if "No ONNX function" in line or "Error when translating" in line]
    return (said or [line for line in lines if line] or [type(err).__name__])[0][:300]


def _traceback_nodes(err: BaseException | None) -> Iterator[torch.fx.Node]:
    while err is not None:
        frame = err.__traceback__
        while frame is not None:
            node = frame.tb_frame.f_locals.get("node")
            if isinstance(node, torch.fx.Node):
                yield node
            frame = frame.tb_next
        err = err.__cause__ or err.__context__


def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    """uint8 [N, 48, 48] faces through the ONNX file at `path` -> float32 [N, C] probabilities, RUN_BATCH at a time.

    A file onnxruntime cannot load or run (a shape it refuses, an op it lacks) is one line: it is not deployable.
    """
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings (unused initializers...) are not the user's business
    # onnxruntime's errors (InvalidArgument, Fail, ...) share no base class but Exception
    errors = tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {INPUT_NAME: batch})[0] for batch in model_batches(images)])
    except errors as err:
        raise FerTuneError(f"onnxruntime cannot run the exported model: {_first_line(err)}") from None


def run_torch(module: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """The same through the torch model: the reference the ONNX file is checked against."""
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(batch)).numpy() for batch in model_batches(images)])


def model_batches(images: np.ndarray, size: int = RUN_BATCH) -> Iterator[np.ndarray]:
    """The registered input: float32 pixel values 0..255 [size, 1, 48, 48], `size` faces at a time."""
    for start in range(0, len(images), size):
        yield images[start : start + size, None].astype(np.float32)


def quantize_int8(source: Path, target: Path, calibration: np.ndarray) -> str:
    """Write `source` quantized to int8 at `target`; how: "static QDQ" or "dynamic".

    Static QDQ (weights per channel, activations from a MinMax calibration on `calibration`) is what
    ONNX Runtime recommends for CNNs: convolutions run in int8 end to end. Dynamic quantization only
    covers MatMul/Gemm weights (the dense head) and scales activations at run time: the fallback
    where the static quantizer fails on a graph.

    Weights get 7 bits (`reduce_range`): x86 CPUs without VNNI multiply u8 by s8 with an instruction
    (VPMADDUBSW) whose 16-bit sums saturate, which onnxruntime's quantization guide warns of. Measured
    here (AVX2, no VNNI) on `basic` trained on the test blobs: 8-bit weights took the test accuracy from
    72.9% (fp32) to 28.6%, 7-bit ones kept 72.9%. Phones (ARM) do not saturate; 7 bits cost them little.
    """
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.name + ".prepared")
    settings = {"op_types_to_quantize": INT8_OPS, "per_channel": True, "reduce_range": True}
    try:
        with _quiet():
            # shape inference and graph optimization first, as onnxruntime's quantization guide asks
            quant_pre_process(str(source), str(prepared))
            try:
                quantize_static(
                    str(prepared), str(target), _calibration_reader(calibration), QuantFormat.QDQ, **settings
                )
                return "static QDQ"
            except Exception as err:  # the static quantizer's failures have no common type: fall back, say why
                quantize_dynamic(str(prepared), str(target), **settings)
                return f"dynamic (static QDQ failed: {_first_line(err)})"
    finally:
        prepared.unlink(missing_ok=True)


def _calibration_reader(images: np.ndarray):
    """onnxruntime's calibration input: an object whose get_next() returns one feed dict a call, then None."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = ({INPUT_NAME: batch} for batch in model_batches(images, CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    return Batches()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No library log lines on fer-tune's console: the exporter's and quantizer's INFO and WARNING records
    (onnxruntime.quantization logs through the root logger) are dropped for the call; errors still raise."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(torch\.onnx|onnxscript|onnx_ir|onnxruntime)")
            yield
    finally:
        logging.disable(previous)
