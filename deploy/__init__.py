"""Deployment of BitDust nodes: configuration templates, node control, local networks, CLI."""
