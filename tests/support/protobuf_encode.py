"""Encodes Confluent-framed Protobuf values with Google's own protobuf runtime.

An encoder independent of inlet for the Protobuf tests: protoc (from
grpcio-tools) compiles the .proto files of a directory, Google's Python
protobuf runtime builds each message from its proto3 JSON form and
serializes it, and the value is framed as Confluent's serializer frames it:
magic byte 0, the 4-byte big-endian schema id, the message-index array
(zig-zag varints: the count, then the indexes; [0] as a single 0), the body.

    python protobuf_encode.py DIR FILE MESSAGE SCHEMA_ID < values.jsonl > values.hex

FILE is the .proto file (relative to DIR) that defines MESSAGE (fully
qualified). Each input line is one message in proto3 JSON; each output line
the framed value in hex.
"""

import os
import struct
import sys
import tempfile

import grpc_tools
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_tools import protoc


def zigzag_varint(n):
    z = (n << 1) ^ (n >> 31)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def message_index(desc):
    """The path of `desc` among its file's top-level messages and their nested ones."""
    path = []
    while desc is not None:
        siblings = (
            desc.containing_type.nested_types
            if desc.containing_type is not None
            else list(desc.file.message_types_by_name.values())
        )
        path.append([s.full_name for s in siblings].index(desc.full_name))
        desc = desc.containing_type
    path.reverse()
    if path == [0]:
        return b"\x00"
    return zigzag_varint(len(path)) + b"".join(zigzag_varint(i) for i in path)


def main():
    proto_dir, proto_file, message, schema_id = sys.argv[1:5]
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        rc = protoc.main(
            [
                "protoc",
                f"-I{proto_dir}",
                f"-I{include}",
                "--include_imports",
                f"--descriptor_set_out={out}",
                os.path.join(proto_dir, proto_file),
            ]
        )
        if rc != 0:
            sys.exit(f"protoc failed ({rc})")
        files = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            files.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in files.file:
        pool.Add(fd)
    desc = pool.FindMessageTypeByName(message)
    cls = message_factory.GetMessageClass(desc)
    header = b"\x00" + struct.pack(">I", int(schema_id)) + message_index(desc)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        m = json_format.Parse(line, cls())
        sys.stdout.write((header + m.SerializeToString()).hex() + "\n")


if __name__ == "__main__":
    main()
