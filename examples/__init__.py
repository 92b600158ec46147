"""Runnable examples of pipelines and user stages (see README "Writing a stage")."""
