"""Protocol connectors: each turns a device protocol into batches of Readings."""
