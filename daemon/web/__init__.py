"""Everything the daemon says over HTTP: Prometheus metrics, health, the review API and console."""
