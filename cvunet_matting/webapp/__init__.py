"""The HTTP side: the JSON API, the pages, and what both share (errors, inputs, waiting, downloads)."""
