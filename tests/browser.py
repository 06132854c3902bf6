"""A small form-filling browser over the real app: cookies, CSRF tokens, redirects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape

from aiohttp.test_utils import TestClient

CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]*)"')
DEFAULT_PASSWORD = "correct horse battery"


@dataclass
class Page:
    status: int
    path: str
    html: str

    @property
    def text(self) -> str:
        """The page's text without tags, for assertions about what a person reads."""
        return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", self.html)))

    def csrf_token(self) -> str:
        match = CSRF_PATTERN.search(self.html)
        assert match, f"no CSRF token on {self.path}"
        return match.group(1)


class Browser:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.token = ""

    async def get(self, path: str, **headers: str) -> Page:
        async with self.client.get(path, headers=headers) as response:
            page = Page(response.status, response.url.path_qs, await response.text())
        match = CSRF_PATTERN.search(page.html)
        if match:
            self.token = match.group(1)
        return page

    async def post(
        self,
        path: str,
        fields: dict[str, str] | None = None,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Page:
        """Submit a form as a browser would, following the redirect that answers it."""
        if csrf and not self.token:
            await self.get("/")
        data = dict(fields or {})
        if csrf:
            data.setdefault("csrf_token", self.token)
        async with self.client.post(path, data=data, headers=headers) as response:
            page = Page(response.status, response.url.path_qs, await response.text())
        match = CSRF_PATTERN.search(page.html)
        if match:
            self.token = match.group(1)
        return page

    async def register(
        self, username: str, password: str = DEFAULT_PASSWORD, display_name: str = ""
    ) -> Page:
        await self.get("/register")
        page = await self.post(
            "/register",
            {
                "username": username,
                "display_name": display_name,
                "password": password,
                "password_again": password,
                "consent": "yes",
            },
        )
        assert page.status == 200, page.text
        await self.get("/")  # the session changed: pick up its token
        return page

    async def login(self, username: str, password: str = DEFAULT_PASSWORD) -> Page:
        await self.get("/login")
        page = await self.post("/login", {"username": username, "password": password})
        await self.get("/")
        return page

    async def logout(self) -> Page:
        page = await self.post("/logout")
        await self.get("/")
        return page
