"""A hosted API request's JSON, checked against the message it fills before
protobuf reads it. Protobuf's JSON reader is lenient where the hosted API
is typed: it takes "1" for an integer, a list for an object (as an empty
one) and a number for an enum, and its own errors name Python's types
("'int' object is not iterable"). Clients made from the hosted model
(botocore, the SDKs) never send those; a hand-written one that does is
told which field, by its path in the body, and what it must be.

Names the message does not have are left alone, as protobuf's reader is
told to (a newer client's fields), and so is null (absent).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_INTEGERS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_NUMBERS = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
_TEXT = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES}


class WrongType(Exception):
    """A value of the wrong JSON type: where it is, and what it must be."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def check(descriptor: Descriptor, values: dict[str, Any], path: str = "") -> None:
    """WrongType at the first value whose JSON type its field cannot hold."""
    fields = {f.json_name: f for f in descriptor.fields}
    fields.update({f.name: f for f in descriptor.fields})  # protobuf reads both
    for name, value in values.items():
        field = fields.get(name)
        if field is None or value is None:
            continue
        where = f"{path}.{name}" if path else name
        if field.is_repeated and not _is_map(field):
            if not isinstance(value, list):
                raise WrongType(where, "must be a list")
            for index, item in enumerate(value):
                _value(field, item, f"{where}[{index}]")
        else:
            _value(field, value, where)


def _value(field: FieldDescriptor, value: Any, where: str) -> None:
    kind, message = field.type, field.message_type
    if message is not None:
        if not isinstance(value, dict):
            raise WrongType(where, "must be an object")
        if not _is_map(field) and not message.full_name.startswith("google."):
            check(message, value, where)
    elif kind in _INTEGERS:
        # 60.0 is 60 to a JSON reader (and was to protobuf's); 60.5 is not.
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole:
            raise WrongType(where, "must be an integer")
    elif kind in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WrongType(where, "must be a number")
    elif kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise WrongType(where, "must be true or false")
    elif field.enum_type is not None:
        names = [v.name for v in field.enum_type.values if v.number != 0]
        if value not in names:
            raise WrongType(where, "must be one of " + ", ".join(names))
    elif kind in _TEXT and not isinstance(value, str):
        raise WrongType(where, "must be a string")


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry
