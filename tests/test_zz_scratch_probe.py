from tests.conftest import BrowserFactory


async def test_probe(browser_factory: BrowserFactory) -> None:
    a = await browser_factory()
    await a.register("alice")
    await a.get("/groups/new")
    p = await a.post("/groups/new", {"slug": "t1d", "name": "T1D", "visibility": "public"})
    p = await a.get("/g/missing")
    print("signed-in missing", p.status, p.text[:200])
    b = await browser_factory()
    await b.register("bob")
    p = await b.post("/g/t1d/new", {"title": "x", "body": "y"})
    print("non-member", p.status, p.text[:300])
    big = "x" * (300 * 1024)
    p = await a.post("/g/t1d/new", {"title": "x", "body": big})
    print("big thread", p.status, p.text[:300])
