"""Model catalogue and routing: ordered routes, retries, fallbacks, circuit breaking."""
