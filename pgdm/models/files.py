"""Reading checkpoint and config files without running code, with one-line errors that name the file."""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

__all__ = ["first_sentence", "read_checkpoint", "read_json_object", "read_safetensors"]

StateDict = dict[str, torch.Tensor]

# Phrases of torch's weights-only unpickler when a pickle needs a Python object or call it will not make.
_CODE_REFUSALS = ("GLOBAL", "reduce for", "create new object", "Can only build")


def first_sentence(message: str) -> str:
    """The first line of ``message`` up to its first full stop, whitespace collapsed (for one-line errors)."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return " ".join(re.split(r"(?<=[a-z0-9)])\.\s", line, maxsplit=1)[0].split()).rstrip(".")


def read_checkpoint(path: str | os.PathLike[str]) -> StateDict:
    """Read a PyTorch checkpoint holding a bare state dict (str → tensor), without running any code.

    Uses ``torch.load(weights_only=True)`` (memory-mapped for zip-format files). A pickle that
    needs Python objects or calls to unpickle is refused and never executed; a truncated or
    corrupt file is reported as such. Both raise a one-line ValueError naming the file. A
    ``module.`` prefix on every key (``nn.DataParallel``) is removed.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s+Please use|\n\n|$)", str(e), re.S)
        reason = " ".join(match.group(1).split()) if match else first_sentence(str(e))
        if not any(phrase in reason for phrase in _CODE_REFUSALS):
            raise ValueError(f"{path} is not a valid PyTorch checkpoint (corrupt or not a torch.save file: {reason})") from None
        raise ValueError(
            f"refusing to load {path}: it holds Python objects or code that a safe load does not run ({reason}); "
            "if you trust its source, save only its tensors elsewhere (torch.save(model.state_dict(), PATH)) "
            "and load that file, or `pgdm convert` it to .safetensors"
        ) from None
    # what the weights-only unpickler raises on arbitrary bytes besides UnpicklingError (random data: IndexError,
    # KeyError, UnicodeDecodeError, …): every one means the file is not a checkpoint
    except (RuntimeError, EOFError, OSError, ValueError, LookupError, TypeError, AttributeError, ArithmeticError, struct.error, zipfile.BadZipFile) as e:
        reason = first_sentence(str(e)) or "unexpected end of file"
        raise ValueError(f"{path} is not a valid PyTorch checkpoint (truncated or corrupt: {reason})") from None
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"{path} does not hold a state dict (str → tensor) but a {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def read_safetensors(path: str | os.PathLike[str]) -> StateDict:
    """All tensors of a ``.safetensors`` file; a truncated or corrupt file raises a one-line ValueError naming it."""
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        reason = first_sentence(str(e)).removeprefix("Error while deserializing header: ")
        raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupt: {reason})") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (``what`` it should hold, for the message); one-line ValueError naming the file otherwise."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno}); expected {what}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file; expected {what} as JSON") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected {what} as a JSON object, got a JSON {type(obj).__name__}")
    return obj
