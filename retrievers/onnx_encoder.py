"""ONNX Runtime for short encodes on the CPU: the same sentence-transformers model, exported once.

For a query or a few sentences, torch's eager mode spends most of its time in per-operator
overhead. The same MiniLM graph run by ONNX Runtime encodes one HotpotQA question in 6.5 ms
instead of 17 ms on one thread of a 2-core machine, with vectors equal to within 1e-5. Batches of
ingestion are as fast either way (512 HotpotQA paragraphs: 17 s both), so ingestion keeps torch.

An int8 copy of the graph (`_quantize`) serves texts that are only compared during a turn and
never stored, such as an answer's sentences: about twice as fast again, at a cosine of 0.99 to
the exact vectors. Queries and everything stored use the exact graph.

The export runs once per model (a few seconds) and is cached under the cache directory, named by
a hash of the model's files; later processes load the cached graph. Models this module cannot
reproduce exactly (pooling other than mean or CLS, extra modules) stay on torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("agentrag.embeddings")

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxEncoder:
    """Encodes texts one at a time (no padding: for a handful of sentences of different
    lengths, one run each was faster than one padded batch, 48 against 64 ms for six) with the
    pooling and normalisation of the sentence-transformers model it was exported from."""

    def __init__(
        self,
        session: Any,
        tokenize: Callable[[list[str]], Mapping[str, Any]],
        pooling: str,
        normalize: bool,
    ) -> None:
        self._session = session
        self._tokenize = tokenize
        self._pooling = pooling
        self._normalize = normalize
        self._inputs = [i.name for i in session.get_inputs()]

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = [self._encode_one(text) for text in texts]
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def _encode_one(self, text: str) -> np.ndarray:
        tokens = self._tokenize([text])
        ids = np.asarray(tokens["input_ids"], dtype=np.int64)
        feed = {
            name: np.asarray(tokens[name], dtype=np.int64) if name in tokens else np.zeros_like(ids)
            for name in self._inputs
        }
        hidden = self._session.run(None, feed)[0][0]
        vector = hidden[0] if self._pooling == "cls" else hidden.mean(axis=0)
        if self._normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm > 0 else vector
        return np.asarray(vector, dtype=np.float32)


def pooling_of(model: Any) -> tuple[str, bool] | None:
    """(`mean` | `cls`, normalised) when the model is Transformer, Pooling[, Normalize] with a
    pooling this module reproduces; None otherwise."""
    kinds = [type(m).__name__ for m in model]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return None
    config = model[1].get_config_dict()
    mode = config.get("pooling_mode")
    if mode is None:  # sentence-transformers 5 names each mode by a flag
        modes = [k for k, on in config.items() if k.startswith("pooling_mode_") and on is True]
        mode = modes[0].removeprefix("pooling_mode_") if len(modes) == 1 else None
    if isinstance(mode, list | tuple):
        mode = mode[0] if len(mode) == 1 else None
    mode = {"mean_tokens": "mean", "cls_token": "cls"}.get(str(mode), mode)
    if mode not in ("mean", "cls") or config.get("include_prompt") is False:
        return None
    return str(mode), len(kinds) == 3


def _fingerprint(model_path: Path) -> str:
    """Names, sizes and modification times of the model's files: a changed model exports anew."""
    digest = hashlib.sha256(str(model_path.resolve()).encode())
    for path in sorted(p for p in model_path.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(model_path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


@contextmanager
def _written_atomically(target: Path) -> Iterator[str]:
    """A temporary path to write, renamed to `target` on success: a process starting alongside
    sees the whole file or none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache others may read is not
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _export(model: Any, model_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    # eager attention traces to plain operators that ONNX Runtime fuses; SDPA's mask helpers do not
    network = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()
    names = [n for n in _INPUTS if n in model.tokenizer.model_input_names]

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.inner(
                **dict(zip(names, tensors, strict=True))
            ).last_hidden_state
            return hidden

    sample = model.tokenizer(
        ["an example", "a longer example sentence"], padding=True, return_tensors="pt"
    )
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    with (
        _written_atomically(target) as tmp,
        torch.no_grad(),
        warnings.catch_warnings(),  # tracer notes on shapes: the graph runs one text at a time
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Hidden(network),
            tuple(sample[n] for n in names),
            tmp,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantize(source: Path, target: Path) -> None:
    """int8 weights per channel, in the reduced range that CPUs without VNNI need to stay
    exact: on MiniLM, cosine to the fp32 vectors 0.993 on average (0.988 at worst over 150
    HotpotQA paragraphs) against 0.955 per tensor, and one question in 5.9 ms against 11.5."""
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    with _written_atomically(target) as tmp:
        quantize_dynamic(
            str(source), tmp, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
        )


def load_onnx_encoder(
    model: Any, model_path: str, cache_dir: Path, threads: int = 1, int8: bool = False
) -> OnnxEncoder | None:
    """The model as an `OnnxEncoder` (its int8 copy with `int8`), exported on first use; None
    (torch stays in use) when ONNX Runtime is missing, the model is not a plain local
    sentence-transformers model, or the export fails. The reason is logged, never raised: torch
    gives the same vectors, slower."""
    session = onnx_session(model, model_path, cache_dir, threads, int8)
    pooling = pooling_of(model)
    if session is None or pooling is None:
        return None
    module = model[0]
    tokenize = getattr(module, "preprocess", None) or module.tokenize
    return OnnxEncoder(session, tokenize, *pooling)


def onnx_session(
    model: Any, model_path: str, cache_dir: Path, threads: int = 1, int8: bool = False
) -> Any | None:
    """An ONNX Runtime session of the model's transformer (inputs padded or not, output the
    last hidden state), exported on first use and cached; None, with the reason logged, when
    it cannot be had."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped]
    except ImportError:
        logger.info("onnxruntime is not installed: short encodes run on torch")
        return None
    path = Path(model_path)
    if not path.is_dir() or pooling_of(model) is None:
        logger.info("%s is not a plain local model: short encodes run on torch", model_path)
        return None
    exported = cache_dir / "onnx" / f"{path.name}-{_fingerprint(path)}.onnx"
    target = exported.with_suffix(".int8.onnx") if int8 else exported
    try:
        if not exported.exists():
            logger.info("exporting %s to ONNX (once, cached at %s)", model_path, exported)
            _export(model, path, exported)
        if not target.exists():
            _quantize(exported, target)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # an export or a cached file that fails must not stop encoding
        logger.warning("ONNX encoder unavailable (%s): short encodes run on torch", exc)
        target.unlink(missing_ok=True)
        return None
