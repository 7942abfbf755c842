"""README.md renders as meant: every code fence closes, the sections a newcomer needs are
there, and every Python sample at least compiles (tests/system/test_readme_examples.py runs
the runnable ones)."""

from __future__ import annotations

from pathlib import Path

from markdown_it import MarkdownIt

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = (
    "Quick start",
    "Running on a cluster",
    "Codecs and keys",
    "Typed ObjectStore",
    "Coordination",
    "Flows",
    "Tasks and events",
    "Web gateway and monitor",
    "Examples",
    "Errors",
    "Observing jsflow",
)


def _tokens() -> list:  # type: ignore[type-arg]
    return MarkdownIt("commonmark").parse(README.read_text())


def test_every_fence_closes_and_no_text_hides_in_one() -> None:
    text = README.read_text()
    fences = [line for line in text.splitlines() if line.lstrip().startswith("```")]
    assert len(fences) % 2 == 0, "an unclosed code fence swallows the rest of the README"
    for opening, closing in zip(fences[::2], fences[1::2], strict=True):
        assert closing.strip() == "```", f"text after a closing fence: {closing!r}"
    blocks = [t for t in _tokens() if t.type == "fence"]
    assert len(blocks) == len(fences) // 2


def test_the_sections_a_newcomer_needs_are_headings() -> None:
    tokens = _tokens()
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    missing = [s for s in SECTIONS if s not in headings]
    assert not missing, f"missing sections: {missing}"


def test_every_python_sample_compiles() -> None:
    for block in (t for t in _tokens() if t.type == "fence" and t.info.strip() == "python"):
        # samples use top-level await, as in an async REPL: compile them inside a coroutine
        body = "\n".join("    " + line for line in block.content.splitlines())
        compile(f"async def _sample():\n{body}\n", str(README), "exec")
