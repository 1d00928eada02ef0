"""Builder views."""

urls: list = []
