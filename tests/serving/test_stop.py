"""StopMatcher: stop strings split over arbitrary chunk boundaries."""

from hypothesis import given
from hypothesis import strategies as st

from levant.serving.stop import StopMatcher


def run(chunks: list[str], stops: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = "".join(m.push(c) for c in chunks)
    return out + m.flush(), m.stopped


def test_stop_across_chunks() -> None:
    assert run(["Hello wo", "rl", "d! more"], ["world"]) == ("Hello ", True)


def test_partial_prefix_is_released_when_it_does_not_match() -> None:
    assert run(["abc wor", "k done"], ["world"]) == ("abc work done", False)


def test_held_text_flushed_at_end() -> None:
    assert run(["the end wor"], ["world"]) == ("the end wor", False)


def test_earliest_of_several_stops_wins() -> None:
    assert run(["one, two. three"], [".", ","]) == ("one", True)


def test_no_stops_passes_everything() -> None:
    assert run(["a", "b"], []) == ("ab", False)


@given(
    text=st.text(alphabet="abcXY ", max_size=40),
    stop=st.text(alphabet="abcXY", min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_matches_whole_string_search(text: str, stop: str, cuts: list[int]) -> None:
    """Any chunking gives the same result as searching the whole text at once."""
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    idx = text.find(stop)
    expected = (text[:idx], True) if idx >= 0 else (text, False)
    assert run(chunks, [stop]) == expected
