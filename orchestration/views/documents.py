"""Documents views."""

urls: list = []
