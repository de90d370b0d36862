"""TensorProto <-> numpy without going through ``tf.make_tensor_proto`` / ``tf.make_ndarray``.

Filling ``tensor_content`` with the array's raw little-endian bytes is one memcpy; ``tf.make_tensor_proto``
inspects and converts every element in Python and is several times slower per request (measured by
``fraudstream bench scoring``, see docs/benchmarks.md). Decoding accepts both encodings because TF Serving
and other clients may answer with the repeated ``float_val`` field instead.
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

_LITTLE = sys.byteorder == "little"


def float_tensor(array: npt.NDArray[np.float32]) -> tensor_pb2.TensorProto:
    """A DT_FLOAT TensorProto holding ``array`` (any shape) in ``tensor_content``."""
    array = np.ascontiguousarray(array, dtype="<f4")
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]
    shape = tensor_shape_pb2.TensorShapeProto(dim=dims)
    content = array.tobytes()
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=content)


def to_float_array(proto: tensor_pb2.TensorProto) -> npt.NDArray[np.float32]:
    """A float32 numpy array from a DT_FLOAT TensorProto (``tensor_content`` or ``float_val``)."""
    if proto.dtype != types_pb2.DT_FLOAT:
        msg = f"expected a DT_FLOAT tensor, got dtype {proto.dtype}"
        raise ValueError(msg)
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    count = int(np.prod(shape)) if shape else 1
    if proto.tensor_content:
        flat = np.frombuffer(proto.tensor_content, dtype="<f4")
    elif len(proto.float_val) == count:
        flat = np.asarray(proto.float_val, dtype=np.float32)
    elif len(proto.float_val) == 1:  # TF's compact form: one value repeated over the whole shape
        flat = np.full(count, proto.float_val[0], dtype=np.float32)
    else:
        flat = np.asarray(proto.float_val, dtype=np.float32)
    if flat.size != count:
        msg = f"tensor holds {flat.size} values but its shape {shape} needs {count}"
        raise ValueError(msg)
    return flat.astype(np.float32, copy=False).reshape(shape)


def to_strings(proto: tensor_pb2.TensorProto) -> list[str]:
    """The values of a DT_STRING tensor (scalar or vector) decoded as UTF-8."""
    return [value.decode("utf-8", errors="replace") for value in proto.string_val]
