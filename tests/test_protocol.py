"""The shared vocabulary's checks and helpers: shapes, config changes, Redis URLs, text and redaction."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daq_runner import _redis, _text, protocol
from daq_runner.exceptions import DaqProtocolError

# -- Redis stream entries --------------------------------------------------------------------

STATUS = {"state": "READY", "acquisition": None}
ACQUISITION = {"info": {"n_images": 1, "output_file": "/a.h5", "run_id": 1}, "message": "Completed.", "state": "FINISHED", "stats": {}, "reports": None}


@pytest.mark.parametrize(
    "stream, value, text",
    [
        ("daq:status", None, "entry must be an object, not null"),
        ("daq:status", [1], "entry must be an object, not a list"),
        ("daq:status", {"state": 3}, "entry.state must be a string, not a number"),
        ("daq:log", None, "entry must be an object, not null"),
        ("daq:log", {"state": False}, "entry.state must be a string, not a boolean"),
        ("daq:stat", "x", "entry must be an object or null, not a string"),
        ("daq:stat", None, "entry must be an object, not null"),
        ("daq:config", None, "entry must be an object, not null"),
        ("daq:config", {"module_positions": []}, "entry.module_positions must be an object"),
        ("daq:other", 5, "entry must be an object, not a number"),
    ],
)
def test_stream_entry_of_the_wrong_shape_names_the_stream(stream, value, text):
    """A decoded stream entry of the wrong shape is a DaqProtocolError naming the stream and entry id."""
    with pytest.raises(DaqProtocolError) as info:
        protocol.check_stream_entry(stream, value, entry_id="17-0")
    assert f"Redis stream {stream!r} entry 17-0" in str(info.value) and text in str(info.value)


@pytest.mark.parametrize(
    "stream, value",
    [
        ("daq:status", STATUS),
        ("daq:status", {"state": "WRITING", "acquisition": {**ACQUISITION, "state": "ACQUIRING_IMAGES", "message": ""}}),
        ("daq:log", ACQUISITION),
        ("daq:stat", {"detector": {"bytes_per_second": 1.0, "images_per_second": 2}, "writer": {"writes_per_second": 3.5}}),
        ("daq:config", {"bit_depth": 16, "module_positions": {}, "extra": [1]}),
    ],
)
def test_stream_entries_real_servers_write_are_accepted(stream, value):
    """Entries as the real server writes them pass unchanged."""
    assert value is protocol.check_stream_entry(stream, value)


def test_stream_names_are_configurable():
    """The check follows the deployment's stream names (the README's daq:writer_status)."""
    names = protocol.StreamNames(status="daq:writer_status")
    with pytest.raises(DaqProtocolError, match="entry.state must be a string"):
        protocol.check_stream_entry("daq:writer_status", {"state": None}, names)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(), lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=20))
def test_checks_raise_only_protocol_errors_for_any_json(value):
    """Whatever JSON arrives, a check either accepts it or raises DaqProtocolError (never TypeError & co.)."""
    for check in (protocol.check_writer_status, protocol.check_config, protocol.check_deployment, protocol.check_stats, protocol.check_logs, protocol.check_log_record):
        try:
            check(value, "test")
        except DaqProtocolError as exc:
            assert 1 == len(str(exc).splitlines())
    for stream in ("daq:status", "daq:log", "daq:stat", "daq:config"):
        try:
            protocol.check_stream_entry(stream, value)
        except DaqProtocolError:
            pass


# -- config changes ------------------------------------------------------------------------


def test_config_changes_are_normalized():
    """Integer fields given as numeric strings become ints (the server converts them too)."""
    assert {"bit_depth": 32, "writer_user_id": -1} == protocol.check_config_changes({"bit_depth": "32", "writer_user_id": "-1"})


def test_merge_keeps_unchanged_fields_exactly():
    """The whole config goes back as read, with only the changes applied (module_positions untouched)."""
    current = {"bit_depth": 16, "module_positions": {"0": [0, 255, 255, 0]}, "submodule_info": {}}
    merged = protocol.merge_config(current, {"bit_depth": 8})
    assert {"bit_depth": 8, "module_positions": {"0": [0, 255, 255, 0]}, "submodule_info": {}} == merged
    merged["module_positions"]["0"].append(9)
    assert [0, 255, 255, 0] == current["module_positions"]["0"], "a copy, not the caller's objects"


def test_config_differences_compare_integers_as_numbers():
    assert [] == protocol.config_differences({"bit_depth": "16"}, {"bit_depth": 16})
    assert ["bit_depth is None, not 16"] == protocol.config_differences({}, {"bit_depth": 16})


# -- Redis helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rest, redis_url",
    [
        ("http://127.0.0.1:5000", "redis://127.0.0.1:6379/0"),
        ("http://[::1]:5000", "redis://[::1]:6379/0"),
        ("https://[2001:db8::7]:8443/api", "redis://[2001:db8::7]:6379/0"),
        ("http://user:pw@daq-host:5000", "redis://daq-host:6379/0"),
        ("http://DAQ.example.org", "redis://daq.example.org:6379/0"),
    ],
)
def test_default_redis_url_from_a_rest_url(rest, redis_url):
    """The REST host on port 6379, IPv6 in brackets, no credentials carried over."""
    assert redis_url == _redis.default_redis_url(rest)


@pytest.mark.parametrize("rest", ["", "not a url", "http://", None])
def test_default_redis_url_needs_a_host(rest):
    with pytest.raises(ValueError):
        _redis.default_redis_url(rest)


@pytest.mark.parametrize("query", ["?protocol=3", "?decode_responses=True", "?protocol=3&decode_responses=true&encoding=latin-1", "?socket_timeout=0.000001"])
def test_redis_connect_forces_the_reply_format(daq_redis_server, query):
    """protocol=3 / decode_responses in the URL do not change what the code reads: RESP2, bytes."""
    url = daq_redis_server.url.rstrip("/")
    url = url if url.count("/") > 2 else url + "/0"
    client = _redis.connect(url + query)
    try:
        stream = "test:forced"
        client.delete(stream)
        entry_id = client.xadd(stream, {"json": json.dumps(STATUS)})
        assert isinstance(entry_id, bytes)
        assert [(entry_id.decode(), STATUS)] == _redis.decode_entries(client.xrevrange(stream, count=1))
        assert entry_id.decode() == _redis.last_id(client, stream)
        reply = client.xread({stream: "0-0"}, count=1)
        assert isinstance(reply, list), "RESP2 list, not a RESP3 map"
    finally:
        client.delete("test:forced")
        client.close()


def test_decode_entries_tolerates_str_and_garbage():
    """str ids and fields (a decoding client), entries without JSON or with bad JSON are handled."""
    entries = [("1-0", {"json": "{\"a\": 1}"}), (b"2-0", {b"json": b"[not json"}), (b"3-0", {b"other": b"1"}), (b"4-0", None)]
    assert [("1-0", {"a": 1})] == _redis.decode_entries(entries)


def test_redact_url_of_redis_module_is_the_shared_one():
    assert _redis.redact_url is _text.redact_url


# -- text and redaction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://user:pw@host:5000/x?y=1", "http://***@host:5000/x?y=1"),
        ("redis://:pw@[::1]:6379/0", "redis://***@[::1]:6379/0"),
        ("redis://onlyuser@host", "redis://***@host"),
        ("http://u:p@ss@host/", "http://***@host/"),
        ("http://u:p@host:99999/", "http://***@host:99999/"),
        ("http://host:5000", "http://host:5000"),
        (None, None),
        ("", ""),
    ],
)
def test_redact_url(url, shown):
    """Credentials become ***, whatever else is wrong with the URL."""
    assert shown == _text.redact_url(url)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.integers(), st.none()))
def test_redact_url_never_raises(value):
    _text.redact_url(value)


@settings(max_examples=300, deadline=None)
@given(user=st.text("abcXYZ019-_.~", min_size=1, max_size=12), password=st.text("abcXYZ019-_.~!$&'()*+,;=%", min_size=3, max_size=20), prefix=st.text(max_size=40))
def test_redact_text_masks_credentials_anywhere(user, password, prefix):
    """scheme://user:password@ is masked wherever it sits in a text."""
    text = f"{prefix} failed: http://{user}:{password}@daq:5000/writer/status (retrying)"
    redacted = _text.redact_text(text)
    assert f":{password}@" not in redacted and "http://***@daq:5000/writer/status" in redacted


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_quote_is_one_printable_short_line(text):
    """Any text becomes one line without control characters, at most MAX_QUOTE characters."""
    quoted = _text.quote(text)
    assert len(quoted) <= _text.MAX_QUOTE
    assert quoted == "" or quoted.isprintable()
    assert "\n" not in quoted and "\r" not in quoted and "\x1b" not in quoted


def test_quote_does_not_leak_credentials_cut_at_the_limit():
    """A URL cut by the shortening loses its "@": the part left is masked anyway."""
    window = _text.MAX_QUOTE * 4 + 256  # quote() scans only this much of a long text
    text = " " * (window - 16) + "http://user:verysecretpassword@host/x"
    quoted = _text.quote(text)
    assert "http://***" in quoted and "user" not in quoted and "very" not in quoted


def test_protocol_error_quotes_keys_from_the_wire():
    """A hostile server name (newline, escape) cannot break the one-line message."""
    deployment = {"status": "SUCCESS", "servers": {"evil\n\x1b[2Jhost": 5}}
    with pytest.raises(DaqProtocolError) as info:
        protocol.check_deployment(deployment, "GET http://daq/daq/deployment")
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and "must be a string, not a number" in message
