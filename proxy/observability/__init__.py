"""Request ids, the access log and OpenTelemetry traces."""
