"""Sources and sinks that move events between Kafka and other systems."""
