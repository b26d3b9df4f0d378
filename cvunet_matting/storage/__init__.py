"""Where state lives outside PostgreSQL: files on the shared data root, and Redis."""
