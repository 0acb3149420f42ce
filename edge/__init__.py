"""Edge storage: telemetry sinks and offline operation."""
