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

_FORMATS = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
    "float32": "f", "float64": "d",
}


class DecodeError(ValueError):
    """Registers that cannot be read as the configured type."""


def registers_to_bytes(registers: list[int], byte_order: str) -> bytes:
    """The value's bytes most significant first, undoing the device's byte and word order."""
    words = [((r >> 8) & 0xFF, r & 0xFF) for r in registers]
    if byte_order in ("BADC", "DCBA"):
        words = [(low, high) for high, low in words]
    if byte_order in ("CDAB", "DCBA"):
        words.reverse()
    return bytes(byte for word in words for byte in word)


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
    fmt = _FORMATS.get(value_type)
    if fmt is None:
        raise DecodeError(f"unknown type {value_type!r}")
    raw = registers_to_bytes(registers, byte_order)
    if len(raw) != struct.calcsize(fmt):
        raise DecodeError(f"{value_type} needs {struct.calcsize(fmt) // 2} registers, got {len(registers)}")
    (value,) = struct.unpack(">" + fmt, raw)
    if bit is not None:
        # Fields are read from the register's bit pattern: a signed type's sign bit is just a bit.
        unsigned = int(value) & ((1 << (8 * struct.calcsize(fmt))) - 1)
        return (unsigned >> bit) & ((1 << bit_length) - 1)
    return value


def scaled(raw: int | float, scale: float, offset: float) -> float:
    """Engineering value: raw x scale + offset."""
    return float(raw) * scale + offset
