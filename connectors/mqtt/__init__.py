"""MQTT connector (paho-mqtt 2.x): JSON telemetry and device alarms from topic templates."""

from connectors.mqtt.connector import MqttConnector
from connectors.mqtt.schema import MqttSourceConfig

__all__ = ["MqttConnector", "MqttSourceConfig"]
