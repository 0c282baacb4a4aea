"""server_tasks package."""
