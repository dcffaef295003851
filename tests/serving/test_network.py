"""Endpoint URLs given to the flows: an empty one (an unset Prefect variable at deploy time) is refused by name."""

from __future__ import annotations

import pytest

from serving.network import checked_url, is_loopback, required_url


def test_a_url_is_normalised_and_none_stays_none() -> None:
    assert required_url(" http://serve-host:8000/ ", "url") == "http://serve-host:8000"
    assert checked_url(None, "production_url") is None
    assert is_loopback("http://127.0.0.1:8000") and not is_loopback("http://serve-host:8000")


def test_an_empty_url_names_the_parameter_and_the_prefect_variable_to_set() -> None:
    with pytest.raises(
        ValueError, match=r"production_url is empty.*prefect variable set inferops_endpoint_url"
    ):
        checked_url("", "production_url")
    with pytest.raises(ValueError, match=r"url 'serve-host:8000' is not an http\(s\) URL"):
        required_url("serve-host:8000", "url")
