"""Checks of weight files that loading, LoRAs and validation share (kept apart so that none of them imports
another for it)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from cos.errors import ModelLoadError

# bytes per element of each safetensors dtype: a header whose shapes do not match its byte ranges is corrupt
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
               "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "C64": 8}
MAX_HEADER = 100 * 1024**2   # the safetensors library's own limit


def check_safetensors(path: Path) -> dict:
    """Header parses, each tensor's shape matches its byte range, and the file is as long as the header says
    (catches truncated downloads and files that are not safetensors at all); returns the header."""
    import os
    import stat

    try:   # non-blocking, then fstat: a FIFO or device named *.safetensors must not hang the check
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot be read ({e.strerror or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ModelLoadError(f"{path}: not a regular file (a FIFO, device or folder cannot hold weights)")
    size = st.st_size
    with os.fdopen(fd, "rb") as f:
        head = f.read(9)
        if len(head) < 8:
            raise ModelLoadError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] != b"{" or n > MAX_HEADER or n < 2:
            start = head[:8].decode("latin-1").encode("unicode_escape").decode()
            raise ModelLoadError(f"{path}: not a safetensors file (it starts with '{start}', not an 8-byte header "
                                 "length and a JSON header)")
        if n > size - 8:
            raise ModelLoadError(f"{path}: truncated safetensors file (header of {n} bytes, file of {size})")
        try:
            header = json.loads(head[8:] + f.read(n - 1))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelLoadError(f"{path}: corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: corrupt safetensors header (not a JSON object)")
    end = 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            dtype, shape, (lo, hi) = v["dtype"], [int(d) for d in v["shape"]], v["data_offsets"]
            width = DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"{path}: corrupt safetensors header (tensor {k!r}: bad dtype, shape or "
                                 "data_offsets)") from None
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi) or hi - lo != width * int(np.prod(shape)):
            raise ModelLoadError(f"{path}: corrupt safetensors header (tensor {k!r}: shape {shape} of {dtype} needs "
                                 f"{width * int(np.prod(shape))} bytes, data_offsets {[lo, hi]} span {hi - lo})")
        end = max(end, hi)
    if 8 + n + end > size:
        raise ModelLoadError(f"{path}: truncated safetensors file ({size} bytes, tensors need {8 + n + end})")
    return header
