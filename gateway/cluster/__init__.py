"""Several gateways, one plant: each device is owned by exactly one gateway at a time.

Ownership is kept in the shared PostgreSQL (the work orders' database), not in a cluster of our own:
each gateway heartbeats a member row; every work unit (a partition of an MQTT source's devices, or a
whole Modbus / OPC UA / Sparkplug source) is given, by rendezvous hashing over the live members, to
one of them; that gateway holds the unit's lease, renews it while it runs, and runs the unit's
connector only while it holds it. A partition of an MQTT source is one persistent MQTT session
(client id ``<client_id>-p<k>``) subscribed to its devices' topics, so what the broker queued for a
gateway that died is delivered to the gateway that takes the partition over. Detector state is
saved to the same database, signed with the plant's keyring, so the next owner continues from it.
"""
