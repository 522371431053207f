"""Named arrays as a safetensors file, the format other tools (PyTorch, Overcomplete, saev) read: an
8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte range, then
the raw little-endian bytes. Read back with every size checked before anything is allocated."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np

from filterviz.errors import WeightsError

_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "U8": np.uint8}
_NAMES = {np.dtype(value): name for name, value in _DTYPES.items()}
_LARGEST_HEADER = 100 * 2**20


def encode_safetensors(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding ``arrays`` (float32/64, int32/64 or uint8) and ``metadata``
    (text to text), tensors in name order."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    parts, offset = [], 0
    for name in sorted(arrays):
        array = np.asarray(arrays[name])  # tobytes() writes C order whatever the layout
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        span = [offset, offset + len(data)]
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape), "data_offsets": span}
        parts.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the tensors start 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(parts)


def decode_safetensors(data: bytes, source: str = "the file") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(arrays, metadata)`` of a safetensors file's bytes; :class:`WeightsError` naming ``source`` if they
    are not one (a short or oversized header, a tensor outside the data, an unknown dtype)."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        if length > min(_LARGEST_HEADER, len(data) - 8):
            raise ValueError(f"a header of {length} bytes in a file of {len(data)}")
        header = json.loads(data[8 : 8 + length])
        metadata = header.pop("__metadata__", {}) or {}
        body = memoryview(data)[8 + length :]
        arrays = {}
        for name, entry in header.items():
            dtype, shape = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<"), tuple(entry["shape"])
            start, end = entry["data_offsets"]
            if not 0 <= start <= end <= len(body) or end - start != dtype.itemsize * int(np.prod(shape)):
                raise ValueError(f"tensor {name} lies outside the data")
            native = dtype.newbyteorder("=")
            arrays[name] = np.frombuffer(body[start:end], dtype).reshape(shape).astype(native)
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as error:
        raise WeightsError(source, f"not a safetensors file filterviz wrote ({error})") from None
    return arrays, {str(k): str(v) for k, v in metadata.items()}
