"""A user stage that scores orders for fraud with an outside service, in batches."""
