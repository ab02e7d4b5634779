"""Long-running services: ``cw server``, the reconciler, monitoring and the notification hook."""
