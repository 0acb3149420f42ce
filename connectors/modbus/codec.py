"""Registers to values: types, byte and word order, scale and offset, bit fields.

Byte order is one 4-letter code naming where the bytes A (most significant)
to D of a 32-bit value sit in two registers, and extends to 64 bits the same
way: ``ABCD`` big-endian, ``DCBA`` little-endian, ``BADC`` bytes swapped in
each register, ``CDAB`` registers swapped (common for floats).

>>> decode_registers([0x4049, 0x0FDB], "float32", "ABCD")
3.1415927410125732
>>> decode_registers([0x0FDB, 0x4049], "float32", "CDAB")
3.1415927410125732
>>> decode_registers([0xFFFE], "int16", "ABCD")
-2
>>> decode_registers([0x504D, 0x4757, 0x0000], "string", "ABCD")
'PMGW'
>>> decode_registers([0b1010_0000], "uint16", "ABCD", bit=5)
1
>>> decode_registers([0b0110_0101], "uint16", "ABCD", bit=4, bit_length=4)  # a mode in bits 4-7
6
"""

from __future__ import annotations

import struct
from functools import lru_cache

_FORMATS = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
    "float32": "f", "float64": "d",
}


class DecodeError(ValueError):
    """Registers that cannot be read as the configured type."""


# Each byte order as (how the registers are packed, how the value is unpacked): the registers arrive as
# 16-bit words; packing them little-endian swaps the bytes in each word, unpacking little-endian reverses
# the whole value, and the two together reverse the word order only.
_ORDERS = {"ABCD": (">", ">"), "DCBA": (">", "<"), "BADC": ("<", ">"), "CDAB": ("<", "<")}


@lru_cache(maxsize=256)
def _structs(value_type: str, byte_order: str, words: int) -> tuple[struct.Struct, struct.Struct]:
    fmt = _FORMATS.get(value_type)
    if fmt is None:
        raise DecodeError(f"unknown type {value_type!r}")
    packing, unpacking = _ORDERS.get(byte_order, _ORDERS["ABCD"])
    value = struct.Struct(unpacking + fmt)
    if value.size != 2 * words:
        raise DecodeError(f"{value_type} needs {value.size // 2} registers, got {words}")
    return struct.Struct(f"{packing}{words}H"), value


def decode_registers(registers: list[int], value_type: str, byte_order: str, bit: int | None = None,
                     bit_length: int = 1) -> int | float | str:
    """One value from the registers it occupies (raw: before scale and offset)."""
    if value_type == "string":
        # Strings are stored in reading order; only a byte swap inside registers is common.
        swapped = byte_order in ("BADC", "DCBA")
        raw = bytes(b for r in registers for b in ((r & 0xFF, r >> 8) if swapped else (r >> 8, r & 0xFF)))
        try:
            return raw.rstrip(b"\x00 ").decode("ascii")
        except UnicodeDecodeError as error:
            raise DecodeError(f"registers are not ASCII text: {error}") from None
    if value_type == "bool":
        word = registers[0]
        return (word >> bit) & 1 if bit is not None else int(word != 0)
    packing, unpacking = _structs(value_type, byte_order, len(registers))
    try:
        (value,) = unpacking.unpack(packing.pack(*registers))
    except struct.error as error:  # a register outside 0..65535
        raise DecodeError(str(error)) from None
    if bit is not None:
        # Fields are read from the register's bit pattern: a signed type's sign bit is just a bit.
        unsigned = int(value) & ((1 << (8 * unpacking.size)) - 1)
        return (unsigned >> bit) & ((1 << bit_length) - 1)
    return value


def scaled(raw: int | float, scale: float, offset: float) -> float:
    """Engineering value: raw x scale + offset."""
    return float(raw) * scale + offset
