"""Budgets (actors/core/budgets.py): the token bucket on a fake clock, the page budget."""

from actors.core.budgets import Bucket, Budgets


class TestBucket:
    def test_burst_then_rate(self):
        """A full bucket gives `burst` at once, then `rate` per second."""
        b = Bucket(rate=10, burst=20, now=0.0)
        assert all(b.take(1, 0.0) for _ in range(20))
        assert not b.take(1, 0.0)
        assert b.take(1, 0.1) and not b.take(1, 0.1)

    def test_take_by_size(self):
        """Bytes are taken as a size: 64 KiB out of a 256 KiB bucket four times, not five."""
        b = Bucket(rate=65536, burst=4 * 65536, now=0.0)
        assert [b.take(65536, 0.0) for _ in range(5)] == [True] * 4 + [False]
        assert b.take(65536, 1.0)

    def test_full_after_long_enough(self):
        """A bucket refilled to the brim can be forgotten (nothing would change)."""
        b = Bucket(rate=1, burst=2, now=0.0)
        b.take(2, 0.0)
        assert not b.full(1.0) and b.full(2.0)


class TestPageBudget:
    def test_a_page_is_at_most_a_quarter_of_the_backlog(self):
        """`joined` can never by itself cut its reader as a slow consumer."""
        assert Budgets().page_bytes(1 << 20) == 256 << 10
        assert Budgets().page_bytes(100_000) == 25_000
        assert Budgets(joined_bytes=4096).page_bytes(1 << 20) == 4096
