"""High-throughput validate -> enrich -> correlate stream processor over Kafka."""

__version__ = "0.1.0"
