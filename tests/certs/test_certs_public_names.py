"""The public names other areas import stay importable."""

import importlib

import pytest


@pytest.mark.parametrize("module", ["certs.pki", "certs.pkifiles", "certs.rotation", "certs.lifecycle", "certs.tls", "certs.dropseal", "certs.sealer", "hub.cli_certs"])
def test_every_public_name_exists(module):
    mod = importlib.import_module(module)
    assert mod.__all__ and all(hasattr(mod, name) for name in mod.__all__)
