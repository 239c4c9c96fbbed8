"""ONNX model files read with protobuf alone (no `onnx`, no onnxruntime): the handful of onnx.proto messages
needed to list a graph's nodes and initializers, declared here with onnx.proto's field numbers. Protobuf skips
the fields left out, so any ONNX file parses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
# message -> [(field name, number, type, label, message type name)] : a subset of onnx/onnx.proto (proto2)
_MESSAGES = {
    "TensorProto": [("dims", 1, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
                    ("data_type", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
                    ("float_data", 4, _F.TYPE_FLOAT, _F.LABEL_REPEATED, None),
                    ("int32_data", 5, _F.TYPE_INT32, _F.LABEL_REPEATED, None),
                    ("int64_data", 7, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
                    ("name", 8, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
                    ("raw_data", 9, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None),
                    ("double_data", 10, _F.TYPE_DOUBLE, _F.LABEL_REPEATED, None)],
    "AttributeProto": [("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
                       ("f", 2, _F.TYPE_FLOAT, _F.LABEL_OPTIONAL, None),
                       ("i", 3, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None),
                       ("s", 4, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None),
                       ("t", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TensorProto"),
                       ("floats", 7, _F.TYPE_FLOAT, _F.LABEL_REPEATED, None),
                       ("ints", 8, _F.TYPE_INT64, _F.LABEL_REPEATED, None)],
    "NodeProto": [("input", 1, _F.TYPE_STRING, _F.LABEL_REPEATED, None),
                  ("output", 2, _F.TYPE_STRING, _F.LABEL_REPEATED, None),
                  ("name", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
                  ("op_type", 4, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
                  ("attribute", 5, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "AttributeProto")],
    "ValueInfoProto": [("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None)],
    "GraphProto": [("node", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "NodeProto"),
                   ("name", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
                   ("initializer", 5, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "TensorProto"),
                   ("input", 11, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "ValueInfoProto"),
                   ("output", 12, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "ValueInfoProto")],
    "ModelProto": [("ir_version", 1, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None),
                   ("producer_name", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
                   ("graph", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "GraphProto")],
}
_PACKAGE = "swaplab_onnx_subset"
# TensorProto.DataType -> numpy dtype (the ones weight files use)
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
           10: np.float16, 11: np.float64}


def _model_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2")
    for message, fields in _MESSAGES.items():
        msg = file.message_type.add(name=message)
        for name, number, ftype, label, type_name in fields:
            f = msg.field.add(name=name, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ModelProto"))


_MODEL_CLASS: Any = None


def tensor_to_numpy(t: Any) -> np.ndarray:
    """An onnx TensorProto (raw_data little-endian, or the typed repeated fields) -> numpy array."""
    if t.data_type not in _DTYPES:
        raise ValueError(f"tensor '{t.name}': unsupported ONNX data type {t.data_type}")
    dtype = np.dtype(_DTYPES[t.data_type]).newbyteorder("<")
    shape = tuple(int(d) for d in t.dims)
    if t.raw_data:
        array = np.frombuffer(t.raw_data, dtype=dtype)
    elif t.data_type in (1,):
        array = np.asarray(t.float_data, dtype=dtype)
    elif t.data_type == 11:
        array = np.asarray(t.double_data, dtype=dtype)
    elif t.data_type == 7:
        array = np.asarray(t.int64_data, dtype=dtype)
    else:
        array = np.asarray(t.int32_data, dtype=np.int32).astype(dtype)
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


@dataclass
class OnnxNode:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class OnnxGraph:
    nodes: list[OnnxNode]
    initializers: dict[str, np.ndarray]  # in file order
    inputs: list[str]  # graph inputs that are not initializers
    outputs: list[str]


def read_onnx(path: str | Path) -> OnnxGraph:
    """Nodes (op type, inputs, outputs, int / float / ints / floats / tensor attributes) and initializers."""
    global _MODEL_CLASS
    if _MODEL_CLASS is None:
        _MODEL_CLASS = _model_class()
    model = _MODEL_CLASS()
    model.ParseFromString(Path(path).read_bytes())
    graph = model.graph
    initializers = {t.name: tensor_to_numpy(t) for t in graph.initializer}
    nodes = []
    for n in graph.node:
        attrs: dict[str, Any] = {}
        for a in n.attribute:
            if a.HasField("t"):
                attrs[a.name] = tensor_to_numpy(a.t)
            elif a.ints:
                attrs[a.name] = [int(v) for v in a.ints]
            elif a.floats:
                attrs[a.name] = [float(v) for v in a.floats]
            elif a.HasField("s"):
                attrs[a.name] = a.s.decode()
            elif a.HasField("f"):
                attrs[a.name] = float(a.f)
            else:
                attrs[a.name] = int(a.i)
        nodes.append(OnnxNode(n.op_type, list(n.input), list(n.output), attrs))
    inputs = [v.name for v in graph.input if v.name not in initializers]
    return OnnxGraph(nodes, initializers, inputs, [v.name for v in graph.output])
