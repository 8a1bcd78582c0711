"""Health checks that exercise a running hub end to end."""
