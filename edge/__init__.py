"""Edge device daemon and on-device profiling."""
