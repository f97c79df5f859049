"""A legacy (pre-zip) `torch.save` file of tensors read with numpy alone: a restricted unpickler
that knows only OrderedDict, tensors and storages, so a file cannot run code, and torch (several GB)
is never needed. Checked against the file's sha256 before anything is read."""

from __future__ import annotations

import collections
import hashlib
import pickle
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Storage:
    """A storage named in the pickle; its bytes follow the pickles and are read afterwards."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.data = dtype, numel, None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        item = self.storage.data.itemsize
        view = np.lib.stride_tricks.as_strided(self.storage.data[self.offset:], self.size,
                                               [s * item for s in self.stride])
        return np.array(view)  # a copy: the storage may be shared between tensors


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name):
        self.dtype = _STORAGE_DTYPES[name]


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only tensors and dicts of tensors are read")

    def persistent_load(self, saved_id):
        kind, storage_type, key, _location, numel, *_ = saved_id
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent object {kind!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        return self.storages[key]


def read_state_dict(path, expected_sha256: str | None = None) -> dict[str, np.ndarray]:
    """{name: numpy array} from a legacy torch.save file of a state dict (float32 weights keep
    their dtype and shape, e.g. (out, in, kh, kw) for a convolution). With expected_sha256, a file
    whose hash differs is refused before it is unpickled. A zip-format (torch >= 1.6) file, or one
    with anything but tensors in it, raises ValueError."""
    path = Path(path)
    if expected_sha256 is not None and (found := sha256(path)) != expected_sha256:
        raise ValueError(f"{path.name}: sha256 {found[:12]}... is not the expected {expected_sha256[:12]}...; "
                         "the file is damaged or a different release: reinstall the package.")
    storages: dict = {}
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise ValueError(f"{path.name} is a zip-format torch file; only the legacy format is read here.")
        f.seek(0)
        if pickle.load(f) != LEGACY_MAGIC:
            raise ValueError(f"{path.name} is not a legacy torch.save file.")
        pickle.load(f), pickle.load(f)  # protocol version, system info (little-endian, type sizes)
        state = _Unpickler(f, storages).load()
        for key in pickle.load(f):  # the storages' raw bytes, in this order, each after its element count
            storage = storages[key]
            count = int(np.frombuffer(f.read(8), "<i8")[0])
            storage.data = np.frombuffer(f.read(count * np.dtype(storage.dtype).itemsize), storage.dtype)
            if count != storage.numel or storage.data.size != count:
                raise ValueError(f"{path.name} is truncated or damaged (storage {key}).")
        if f.read(1):
            raise ValueError(f"{path.name} has unexpected bytes after its tensors.")
    return {name: tensor.to_numpy() for name, tensor in state.items()}
