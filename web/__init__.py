"""The web edge: the aiohttp application, routes, templates and static files."""
