"""OPC UA connector (asyncua): subscriptions or polling, security, Alarms & Conditions, reconnects."""

from connectors.opcua.connector import OpcUaConnector
from connectors.opcua.schema import OpcUaSourceConfig

__all__ = ["OpcUaConnector", "OpcUaSourceConfig"]
