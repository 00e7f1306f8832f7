import threading

import pytest

from vledge.data.prefetch import prefetched


def test_items_come_back_in_order_with_their_results():
    assert list(prefetched(lambda i: i * i, range(5))) == [(i, i * i) for i in range(5)]
    assert list(prefetched(lambda i: i, [])) == []


def test_the_next_item_is_made_while_the_caller_holds_the_current_one():
    second_started = threading.Event()

    def make(i):
        if i == 1:
            second_started.set()
        return i

    seen, ready_while_holding_first = [], None
    for i, _ in prefetched(make, range(3)):
        seen.append(i)
        if i == 0:  # without prefetching, item 1 would only be made after this body returns
            ready_while_holding_first = second_started.wait(timeout=10)
    assert seen == [0, 1, 2]
    assert ready_while_holding_first is True


def test_an_error_is_raised_at_its_item_after_the_earlier_items():
    def make(i):
        if i == 2:
            raise ValueError("bad image 2")
        return i

    seen = []
    with pytest.raises(ValueError, match="bad image 2"):
        for i, _ in prefetched(make, range(4)):
            seen.append(i)
    assert seen == [0, 1]


def test_leaving_early_stops_making_items():
    made = []
    for i, _ in prefetched(made.append, range(100)):
        if i == 1:
            break
    assert len(made) <= 3  # item 1, and at most the one being made ahead
