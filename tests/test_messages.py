import math

import pytest

from hedgepipe import messages as m

from .frames import TOPIC, book, raw_map, valid_book_fields


def test_every_type_round_trips_through_its_topic():
    samples = {
        "md.instrument.deribit.BTC-27DEC26-100000-C": m.Instrument(
            venue="deribit", name="BTC-27DEC26-100000-C", kind="option", base="BTC", quote="USD",
            settle="BTC", tick_size=0.0005, tick_steps=[(0.005, 0.0005)], min_amount=0.1,
            contract_size=1.0, inverse=True, expiry_ns=1_798_358_400_000_000_000, strike=100000.0,
            option_type="call", src="t", seq=1),
        TOPIC: book(1),
        "md.ticker.deribit.BTC-PERPETUAL": m.Ticker(venue="deribit", instrument="BTC-PERPETUAL",
                                                    bid=None, ask=65000.5, delta=1.0, src="t", seq=1),
        "md.trade.deribit.BTC-PERPETUAL": m.Trade(venue="deribit", instrument="BTC-PERPETUAL",
                                                  trade_id="123", price=65000.0, amount=10.0,
                                                  side="buy", src="t", seq=1),
        "md.index.deribit.btc_usd": m.Index(venue="deribit", name="btc_usd", price=65000.0,
                                            src="t", seq=1),
        "hb.feed-deribit": m.Heartbeat(name="feed-deribit", pid=1, state="running", uptime_s=1.0,
                                       counters={"in_msgs": 3}, src="t", seq=1),
    }
    for topic, msg in samples.items():
        assert m.decode(topic, m.encode(msg)) == msg
        # clean.* types extend the md types: an md payload decodes on a clean.* topic, as the
        # clean type, its fields unchanged (the clean-only fields at their defaults)
        if topic.startswith("md."):
            clean = m.decode("clean." + topic[3:], m.encode(msg))
            assert isinstance(clean, type(msg)) and type(clean) is not type(msg)
            assert {f: getattr(clean, f) for f in msg.__struct_fields__} == m.to_builtins(msg)


def test_topic_kind():
    assert m.topic_kind("md.book.deribit.X") == "md.book"
    assert m.topic_kind("md.book") == "md.book"
    assert m.topic_kind("hb.etl-filter") == "hb"
    assert m.topic_kind("weird") == "weird"
    assert m.type_for_topic("md.nope.x") is None


@pytest.mark.parametrize("payload, kind", [
    (b"\xc1\xc1garbage", "decode_error"),                     # not msgpack at all
    (raw_map(**{**valid_book_fields(), "bids": "lots"}), "decode_error"),   # wrong type
    (raw_map(**{k: v for k, v in valid_book_fields().items() if k != "venue"}), "decode_error"),
    (raw_map(**valid_book_fields(), surprise=1), "decode_error"),            # extra field
    (raw_map(**{**valid_book_fields(), "src": ""}), "envelope_error"),       # no src
    (raw_map(**{**valid_book_fields(), "seq": 0}), "envelope_error"),        # no seq
    (raw_map(**{**valid_book_fields(), "v": 99}), "envelope_error"),         # future schema
    (b"\x93\x01\x02\x03", "decode_error"),                    # an array, not a map
])
def test_bad_payloads_raise_frame_error_with_kind(payload, kind):
    with pytest.raises(m.FrameError) as err:
        m.decode(TOPIC, payload)
    assert err.value.kind == kind
    assert TOPIC in str(err.value) or kind == "envelope_error"


def test_error_names_the_field():
    bad = raw_map(**{**valid_book_fields(), "bids": "lots"})
    with pytest.raises(m.FrameError, match=r"bids"):
        m.decode(TOPIC, bad)


def test_unknown_topic_is_its_own_kind():
    with pytest.raises(m.FrameError) as err:
        m.decode("md.weather.x", m.encode(book(1)))
    assert err.value.kind == "unknown_topic"


def test_nan_survives_decoding_for_the_filter_to_reject():
    # Validation here is about shape; value rules (NaN, negative prices) are etl-filter's.
    msg = m.decode(TOPIC, m.encode(book(1, bids=[(float("nan"), 1.0)])))
    assert math.isnan(msg.bids[0][0])
