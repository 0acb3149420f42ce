"""Constants of the MQTT connector."""

CONNECTOR_TYPE = "mqtt"

# Reasons a message is rejected; each is a counter in diagnostics and /metrics.
ERR_INVALID_JSON = "invalid_json"
ERR_NOT_AN_OBJECT = "not_an_object"
ERR_TOPIC_MISMATCH = "topic_mismatch"
ERR_UNKNOWN_DEVICE = "unknown_device"
# A configured device this connector does not subscribe to (another partition's, still in a persistent session).
ERR_NOT_SUBSCRIBED = "device_not_subscribed"
ERR_MISSING_FIELD = "missing_field"
ERR_WRONG_TYPE = "wrong_type"
ERR_BAD_TIMESTAMP = "bad_timestamp"
ERR_BAD_METRIC_NAME = "bad_metric_name"
# Anything else that went wrong while handling one message: the message is rejected, the connector goes on.
ERR_INTERNAL = "internal_error"

# Error messages and logs quote at most this much of a payload.
EXCERPT_CHARS = 80
LOG_MESSAGE_CHARS = 300
MAX_ALARM_CODE_CHARS = 32
MAX_METRIC_NAME_CHARS = 200
MAX_ALARM_MESSAGE_CHARS = 2000

# Timestamps above this are taken as milliseconds (year 5138 in seconds).
MILLISECONDS_THRESHOLD = 1e11

# Readings are handed to the pipeline in batches of at most this many, or
# after FLUSH_INTERVAL_S, whichever comes first.
DEFAULT_BATCH_SIZE = 1000
FLUSH_INTERVAL_S = 0.05

# Stopping, the readings handed over are acknowledged if they are stored within this long.
DRAIN_TIMEOUT_S = 5.0
# Stopping, how long the connector waits for its network thread (each of the drain's waits, and some).
THREAD_JOIN_S = 5 * DRAIN_TIMEOUT_S
# Unsubscribed from (never subscribed to) when stopping: the broker's answer confirms the acknowledgements.
ACK_BARRIER_TOPIC = "pmgw/ack-barrier"

# How often silent devices are looked for when ``offline_after_s`` is set.
OFFLINE_CHECK_INTERVAL_S = 0.5
