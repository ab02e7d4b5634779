"""The transport: the Celery app, the embedded Redis broker, and sending each claimed task's
chain of messages."""
