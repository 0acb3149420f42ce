"""Constants of the Modbus TCP connector."""

CONNECTOR_TYPE = "modbus"

# The Modbus application protocol caps one read at 125 registers and 2000 bits.
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000

REGISTER_TABLES = ("holding", "input")
BIT_TABLES = ("coil", "discrete")

# Registers each value type occupies (strings give their own length).
TYPE_WIDTH = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
VALUE_TYPES = (*TYPE_WIDTH, "string")
BYTE_ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")

# Modbus exception codes, named as the specification names them.
EXCEPTION_NAMES = {
    1: "illegal_function",
    2: "illegal_address",
    3: "illegal_value",
    4: "device_failure",
    5: "acknowledge",
    6: "device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_no_response",
}

# Error kinds counted in diagnostics and /metrics.
ERR_CONNECT = "connect"
ERR_TIMEOUT = "timeout"
ERR_DECODE = "decode"
