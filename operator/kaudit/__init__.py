"""kaudit: Kubernetes API-server audit log collection for the Datadog Agent."""

__version__ = "0.1.0"
