"""The Markdown renderer on its own, in the browser: structure, highlighting, and links that
keep only safe schemes. Model text becomes text nodes; nothing is parsed as HTML."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SOURCE = """# Title
Some **bold**, *em*, `code <b>`, ~~gone~~ and [a link](https://example.eu/x).

- one
- two
  - nested
1. first
2. second

> quoted <i>text</i>

| a | b |
|---|---|
| 1 | <u>2</u> |

```python
def f(x):  # comment
    return "s" + 1
```

[bad](javascript:alert(1)) [data](data:text/html,<script>alert(1)</script>) ![img](https://e.eu/i.png)
<div onclick="x()">raw</div>
```js
const unclosed = 1;"""


@pytest.fixture(scope="module")
def page(browser: Any, web_server: LiveServer) -> Iterator[Any]:
    p = browser.new_page(base_url=web_server.url)
    p.goto("/static/app.css")  # any same-origin page lets the module be imported
    yield p
    p.close()


def render(page: Any, source: str) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        """async (src) => {
        const { renderMarkdown } = await import('/static/js/markdown.js');
        const root = document.createElement('div');
        root.append(renderMarkdown(src));
        const count = (sel) => root.querySelectorAll(sel).length;
        return {
          tags: [...root.querySelectorAll('*')].map(e => e.tagName.toLowerCase()),
          hrefs: [...root.querySelectorAll('a')].map(a => a.getAttribute('href')),
          text: root.textContent,
          nested: count('ul ul'), items: count('li'), cells: count('td'),
          keywords: [...root.querySelectorAll('.tok-kw')].map(e => e.textContent),
          comments: [...root.querySelectorAll('.tok-com')].map(e => e.textContent),
          codeBlocks: count('.code-block'), copy: count('.code-block button.copy'),
          attrs: [...root.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name)),
        };
    }""",
        source,
    )
    return result


def test_structure_and_highlighting(page: Any) -> None:
    out = render(page, SOURCE)
    for tag in ("h3", "strong", "em", "code", "del", "ul", "ol", "blockquote", "table", "pre"):
        assert tag in out["tags"], tag
    assert out["nested"] == 1 and out["items"] == 5 and out["cells"] == 2
    assert out["keywords"][:2] == ["def", "return"]
    assert out["comments"] == ["# comment"]
    assert out["codeBlocks"] == 2 and out["copy"] == 2  # the unclosed fence is still code
    assert "const unclosed = 1;" in out["text"]


def test_only_safe_links_and_no_markup(page: Any) -> None:
    out = render(page, SOURCE)
    assert out["hrefs"] == ["https://example.eu/x", "https://e.eu/i.png"]
    for tag in ("b", "i", "u", "script", "img", "iframe"):
        assert tag not in out["tags"], tag
    assert not [a for a in out["attrs"] if a.startswith("on")]
    assert '<div onclick="x()">raw</div>' in out["text"]
    assert "[bad](javascript:alert(1))" in out["text"]
