"""The JSON API under /api/v1: operations declared once, served, and published as OpenAPI."""
