"""Live views."""

urls: list = []
