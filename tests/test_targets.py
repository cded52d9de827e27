"""Which DAQ a run drives (daq_runner.targets): the sources in order, from Python, without argparse or a DAQ."""

from __future__ import annotations

import pytest

from daq_runner.batch import load_batch_text
from daq_runner.exceptions import SetupError
from daq_runner.det_driver_daq import DriverDaq
from daq_runner.rest_v2 import RestV2Daq
from daq_runner.targets import DRIVER, REST_V2, DaqTarget, resolve_target

BATCH = load_batch_text("version: 1\ndaq: {url: 'http://batch-host:5000', redis: 'redis://batch-host:6379/1'}\nsteps:\n  - stop: {}\n", "b.yaml")
ENV = {"STD_DAQ_API_URL": "http://env-host:5000", "STD_DAQ_REDIS_URL": "redis://env-host:6379/0"}


def test_each_source_gives_both_urls_in_order(tmp_path):
    """--url/--redis > --daq > the environment > the batch's daq: > the default; each says where it came from."""
    profiles = tmp_path / "daqs.yaml"
    profiles.write_text("daqs:\n  beamline: {url: 'http://prof-host:5000', redis: 'redis://prof-host:6379/0'}\n")
    given = resolve_target(url="http://cli-host:5000", redis="redis://cli-host:6379/0", batch=BATCH, environ=ENV)
    assert ("http://cli-host:5000", "redis://cli-host:6379/0", "--url/--redis", False) == (
        given.url, given.redis, given.redis_source, given.redis_derived)
    named = resolve_target(daq="beamline", profiles=str(profiles), batch=BATCH, environ=ENV)
    assert ("http://prof-host:5000", f"--daq beamline ({profiles})") == (named.url, named.url_source)
    assert "http://prof-host:5000" == resolve_target(daq="beamline", batch=BATCH, environ={**ENV, "DAQ_RUNNER_PROFILES": str(profiles)}).url
    assert ("http://env-host:5000", "redis://env-host:6379/0") == (resolve_target(batch=BATCH, environ=ENV).url, resolve_target(batch=BATCH, environ=ENV).redis)
    from_batch = resolve_target(batch=BATCH)
    assert ("http://batch-host:5000", "redis://batch-host:6379/1", "the batch's daq: (b.yaml)") == (from_batch.url, from_batch.redis, from_batch.url_source)
    default = resolve_target()
    assert DaqTarget("http://127.0.0.1:5000", "redis://127.0.0.1:6379/0", "default",
                     "derived from the REST URL (its host, port 6379)", True, REST_V2) == default


def test_a_redis_address_nobody_gave_is_marked_derived_and_the_hint_says_how_to_give_it():
    """--url alone: the Redis is the REST host on port 6379, marked derived; the hint names --redis and --no-redis."""
    target = resolve_target(url="http://[::1]:5000")
    assert ("redis://[::1]:6379/0", True) == (target.redis, target.redis_derived)
    assert "redis://[::1]:6379/0 was not given but derived from the REST URL" in target.redis_hint()
    assert "--redis URL" in target.redis_hint() and "--no-redis" in target.redis_hint()
    given = resolve_target(url="http://h:5000", redis="redis://h:6380/0")
    assert not given.redis_derived and "from --url/--redis" in given.redis_hint()
    assert (None, "--no-redis", "") == (lambda t: (t.redis, t.redis_source, t.redis_hint()))(resolve_target(url="http://h:5000", no_redis=True))


def test_the_redis_password_comes_from_the_environment_not_the_command_line():
    """$STD_DAQ_REDIS_PASSWORD fills in a Redis URL without a password; describe() never shows it."""
    target = resolve_target(url="http://h:5000", redis="redis://runner@h:6379/0", environ={"STD_DAQ_REDIS_PASSWORD": "s3cr:t"})
    assert "redis://runner:s3cr%3At@h:6379/0" == target.redis
    assert "s3cr" not in target.describe() and "***" in target.describe()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"url": "http://h:1", "daq": "x"}, "--daq and --url both name a DAQ"),
        ({"redis": "redis://h/0", "no_redis": True}, "contradict"),
        ({"url": "ftp://h"}, "must be a http/https/ws/wss URL"),
        ({"url": "http://h:5000/?x=1"}, "no query or fragment"),
        ({"url": "ws://h:99999"}, "DAQ URL: not a valid URL: ws://h:99999"),
        ({"url": "http://h:5000", "config_url": "http://h:5001"}, "a config REST and its user go with a current-generation DAQ"),
        ({"config_url": "http://h:5001"}, r"goes with the URL of a current-generation DAQ's driver \(ws://HOST:8080\): give it too"),
        ({"url": "ws://h:8080", "config_url": "ws://h:5000"}, "config REST URL 'ws://h:5000' must be a http/https URL"),
        ({"url": "ws://h:8080", "config_user": " "}, "user name must not be empty"),
        ({"url": "http://h:1", "redis": "http://h:6379"}, "Redis URL 'http://h:6379' must be a redis/rediss/unix URL"),
        ({"daq": "nope", "profiles": "/no/such/daqs.yaml"}, "cannot read profile file /no/such/daqs.yaml"),
    ],
)
def test_what_cannot_be_used_is_one_line(kwargs, message):
    """Contradictions and unusable URLs: SetupError (a ValueError), one line."""
    with pytest.raises(SetupError, match=message) as info:
        resolve_target(**kwargs)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_a_redis_url_from_one_source_and_a_rest_url_from_another_is_refused():
    """$STD_DAQ_REDIS_URL with the batch's REST URL: two DAQs, maybe; refused, saying both sources."""
    with pytest.raises(SetupError, match=r"Redis URL comes from environment .* REST URL would come from the batch's daq: \(b.yaml\)"):
        resolve_target(batch=load_batch_text("version: 1\ndaq: {url: 'http://b:5000'}\nsteps:\n  - stop: {}\n", "b.yaml"),
                       environ={"STD_DAQ_REDIS_URL": "redis://e:6379/0"})


def test_profiles_are_read_as_yaml_12_and_bring_their_notify_block(tmp_path):
    """A profile's notify: comes with the DAQ, its on: a key (not True); YAML 1.1 slips and bad blocks are one line naming the file."""
    profiles = tmp_path / "daqs.yaml"
    profiles.write_text(
        "daqs:\n  eiger:\n    url: http://eiger:5000\n    redis: redis://eiger:6379/0\n"
        "    notify:\n      to: [https://hooks.example.org/T0]\n      on: [failure, busy]\n"
        "  plain: {url: http://plain:5000}\n"
    )
    target = resolve_target(daq="eiger", profiles=str(profiles))
    assert target.notify == {"to": ["https://hooks.example.org/T0"], "on": ["failure", "busy"]}
    assert target.notify_source == f"{profiles}: daqs.eiger"
    assert resolve_target(daq="plain", profiles=str(profiles)).notify is None
    assert resolve_target(url="http://x:5000", daq=None).notify is None
    profiles.write_text("daqs:\n  eiger:\n    url: http://eiger:5000\n    notify: {to: [nope]}\n")
    with pytest.raises(SetupError, match=rf"^{profiles}: daqs\.eiger: notify\.to\[0\]: 'nope' is not a target"):
        resolve_target(daq="eiger", profiles=str(profiles))
    profiles.write_text("daqs:\n  eiger: {url: http://eiger:5000}\n  eiger: {url: http://other:5000}\n")
    with pytest.raises(SetupError, match=rf"^profile file {profiles} is not valid YAML: {profiles}:3:3: "):
        resolve_target(daq="eiger", profiles=str(profiles))


def test_a_ws_url_names_the_current_generation_with_its_config_rest_and_no_redis_of_its_own(tmp_path):
    """ws://: the driver generation; its config REST is given or the driver's host on port 5000;
    no Redis is derived (a given one holds the lock); profiles and the batch's daq: block say the same."""
    derived = resolve_target(url="ws://[::1]:8080")
    assert (DRIVER, "http://[::1]:5000", None, False) == (derived.generation, derived.config_url, derived.redis, derived.redis_derived)
    assert "derived from the driver's URL" in derived.config_url_source and "the run is unlocked" in derived.redis_source
    assert DriverDaq is derived.daq_class and RestV2Daq is resolve_target().daq_class
    given = resolve_target(url="wss://u:pw@h:8080", redis="redis://h:6379/0", config_url="https://h:5443", config_user="e12345")
    assert ("https://h:5443", "e12345", "redis://h:6379/0") == (given.config_url, given.config_user, given.redis)
    assert "pw" not in given.describe() and "config REST https://h:5443 (from --url/--redis)" in given.describe()
    profiles = tmp_path / "daqs.yaml"
    profiles.write_text("daqs:\n  det: {url: 'ws://det-host:8080', config_url: 'http://cfg-host:5000', config_user: beamline}\n")
    named = resolve_target(daq="det", profiles=str(profiles))
    assert ("ws://det-host:8080", "http://cfg-host:5000", "beamline") == (named.url, named.config_url, named.config_user)
    assert f"--daq det ({profiles})" == named.config_url_source
    batch = load_batch_text("version: 1\ndaq: {url: 'ws://b:8080', config_user: me}\nsteps:\n  - stop: {}\n", "b.yaml")
    from_batch = resolve_target(batch=batch)
    assert ("ws://b:8080", "http://b:5000", "me") == (from_batch.url, from_batch.config_url, from_batch.config_user)
    assert None is resolve_target(url="ws://h:8080", no_redis=True).redis
