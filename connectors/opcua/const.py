"""Constants of the OPC UA connector."""

CONNECTOR_TYPE = "opcua"
SECURITY_POLICY = "Basic256Sha256"

# Readings collected from notifications are handed over this often.
FLUSH_INTERVAL_S = 0.05
# How often the session is checked (and, when polling, nothing else is).
CHECK_INTERVAL_S = 1.0
# Used when the server does not publish its operation limits.
DEFAULT_OPERATION_LIMIT = 1000

# OPC UA severity is 1..1000; the usual bands (Part 9) to our four levels.
SEVERITY_BANDS = ((801, "critical"), (601, "high"), (401, "medium"), (0, "low"))

ERR_CONNECT = "connect"
ERR_NODE = "node"
ERR_WRONG_TYPE = "wrong_type"
ERR_UNKNOWN_EVENT_SOURCE = "unknown_event_source"
ERR_CONDITION_REFRESH = "condition_refresh"
