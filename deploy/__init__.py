"""Deployment: the local stack (Kafka + PostgreSQL without Docker), compose and Kubernetes files."""
