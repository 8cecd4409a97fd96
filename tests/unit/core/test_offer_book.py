"""The fast DORA path's offer book: addresses offered and held in memory (pure, own clock)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from app.ipam.offers import OfferBook

NET = "10.0.0.0/24"


def test_a_claim_holds_the_address_for_its_client_until_it_runs_out():
    book = OfferBook()
    assert book.claim(NET, "a", 10, until=30.0, now=0.0)
    assert book.held(NET, "a", now=29.9) == 10 and book.holder(NET, 10, now=29.9) == "a"
    assert book.held(NET, "a", now=30.0) is None and book.holder(NET, 10, now=30.0) is None


def test_another_client_cannot_claim_a_held_address_until_the_offer_lifetime_is_over():
    book = OfferBook()
    assert book.claim(NET, "a", 10, until=30.0, now=0.0)
    assert not book.claim(NET, "b", 10, until=40.0, now=10.0)
    assert book.claim(NET, "b", 10, until=60.0, now=30.0)  # a's offer ran out
    assert book.held(NET, "b", now=31.0) == 10 and book.held(NET, "a", now=31.0) is None


def test_the_same_address_on_another_subnet_is_another_address():
    book = OfferBook()
    assert book.claim(NET, "a", 10, until=30.0, now=0.0)
    assert book.claim("10.0.1.0/24", "b", 10, until=30.0, now=0.0)


def test_a_client_offered_again_moves_to_the_new_address_and_frees_the_old():
    book = OfferBook()
    assert book.claim(NET, "a", 10, until=30.0, now=0.0)
    assert book.claim(NET, "a", 11, until=30.0, now=1.0)
    assert book.holder(NET, 10, now=2.0) is None and book.held(NET, "a", now=2.0) == 11
    assert book.addresses(NET, now=2.0) == {11}


def test_drop_forgets_the_offer_and_frees_the_address():
    book = OfferBook()
    book.claim(NET, "a", 10, until=30.0, now=0.0)
    assert book.drop(NET, "a") == 10 and book.drop(NET, "a") is None
    assert book.claim(NET, "b", 10, until=30.0, now=1.0)


def test_offers_that_ran_out_are_purged_as_new_ones_come():
    book = OfferBook(purge_every=5.0)
    for n in range(100):
        book.claim(NET, f"c{n}", n, until=10.0, now=0.0)
    assert len(book) == 100
    book.claim(NET, "late", 500, until=40.0, now=20.0)  # past the purge interval
    assert len(book) == 1


def test_concurrent_claims_of_one_address_let_exactly_one_client_win():
    book = OfferBook()
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda n: book.claim(NET, f"c{n}", 7, until=30.0, now=0.0),
                            range(64)))
    assert sum(won) == 1
