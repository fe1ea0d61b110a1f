"""The artist's page: static files the server mounts at /."""
