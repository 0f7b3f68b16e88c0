"""Fast subnet evaluation on CPU: BN statistics re-estimated in torch, then the calibrated
subnet runs in onnxruntime (3-8x faster than torch for these depthwise-heavy nets on CPU)."""
from __future__ import annotations

import os
import tempfile
from typing import Optional

import numpy as np
import torch

from supernet import ArchConfig, extract_subnet
from supernet.bn import calibrate_bn, calibration_batches, eval_batches
from supernet.export import export_onnx

__all__ = ["accuracy_file", "accuracy_onnx", "evaluate_arch", "onnx_runner", "tflite_runner"]


def accuracy_onnx(model: torch.nn.Module, source, resolution: int, *, images: Optional[int] = None,
                  batch_size: int = 250, threads: Optional[int] = None) -> dict:
    """Top-1 accuracy and mean cross-entropy of ``model`` (eval mode) on the first ``images``
    of ``source``, run by onnxruntime on the CPU."""
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        export_onnx(model, (1, 3, resolution, resolution), path, dynamic_batch=True)
        return accuracy_file(path, source, resolution, images=images, batch_size=batch_size,
                             threads=threads)
    finally:
        os.unlink(path)


def onnx_runner(path: "str | os.PathLike", threads: Optional[int] = None):
    """A function that runs an ONNX file as shipped (onnxruntime, CPU) on a float32 batch
    N x 3 x H x W and returns its logits; a file with a fixed batch of one is run image by image."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if inp.shape[0] != 1:
        return lambda batch: sess.run(None, {inp.name: batch})[0]
    return lambda batch: np.concatenate([sess.run(None, {inp.name: batch[i:i + 1]})[0]
                                         for i in range(len(batch))])


def tflite_runner(path: "str | os.PathLike"):
    """A function that runs a .tflite as shipped (LiteRT, one thread, image by image) on a
    float32 batch and returns float logits; an int8 model gets its input quantized and its
    output dequantized with the file's own scale and zero point, as an app would."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = outp["quantization"]
    integer_in = np.issubdtype(inp["dtype"], np.integer)

    def run(batch: np.ndarray) -> np.ndarray:
        logits = []
        for img in batch:
            a = img[None]
            if integer_in:
                lim = np.iinfo(inp["dtype"])
                a = np.clip(np.round(a / in_scale) + in_zero, lim.min, lim.max)
            interp.set_tensor(inp["index"], a.astype(inp["dtype"]))
            interp.invoke()
            out = interp.get_tensor(outp["index"]).astype(np.float32)
            logits.append((out - out_zero) * out_scale if out_scale else out)
        return np.concatenate(logits)

    return run


def accuracy_file(path: "str | os.PathLike", source, resolution: int, *,
                  images: Optional[int] = None, batch_size: int = 250,
                  threads: Optional[int] = None) -> dict:
    """Top-1 accuracy and mean cross-entropy of a shipped artifact (``.onnx`` or ``.tflite``,
    int8 included) on the first ``images`` of ``source``."""
    run = tflite_runner(path) if str(path).endswith(".tflite") else onnx_runner(path, threads)
    correct = total = 0
    loss_sum = 0.0
    for x, y in eval_batches(source, resolution, batch_size, limit=images, channels_last=False):
        out = torch.from_numpy(run(x.numpy())).float()
        correct += int((out.argmax(1) == y).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
        total += int(y.numel())
    if total == 0:
        raise ValueError("evaluation set is empty")
    return {"accuracy": correct / total, "samples": total, "loss": loss_sum / total}


def evaluate_arch(net, arch: ArchConfig, eval_source, calib_source, *, calib_images: int = 500,
                  images: Optional[int] = None, batch_size: int = 250) -> dict:
    """Extract, BN-calibrate (torch, channels_last) and evaluate (onnxruntime) one subnet."""
    sub = extract_subnet(net, arch).to(memory_format=torch.channels_last)
    calibrate_bn(sub, calibration_batches(calib_source, arch.r, calib_images, batch_size,
                                          channels_last=True))
    sub = sub.to(memory_format=torch.contiguous_format).eval()
    return accuracy_onnx(sub, eval_source, arch.r, images=images, batch_size=batch_size)
