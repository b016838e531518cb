"""Trust: a development PKI, certificate lifecycle, TLS contexts and JOSE-sealed file drops.

- :mod:`certs.pki` — ``init_pki`` and the :class:`~certs.pki.PkiLayout` of files.
- :mod:`certs.lifecycle` — ``cert_status``, ``rotate``, ``accepted_certificates``.
- :mod:`certs.rotation` — a party's ``rotation.json`` and ``accepted-<kind>.pem``; ``accepted_in_file``.
- :mod:`certs.pkifiles` — atomic, durable reads and writes of certificates and keys.
- :mod:`certs.tls` — ``server_ssl_context``, ``client_ssl_context``, ``uvicorn_ssl_options``.
- :mod:`certs.dropseal` — ``seal_manifest``, ``verify_manifest``, ``encrypt_file``, ``decrypt_file``.
- :mod:`certs.sealer` — :class:`~certs.sealer.DropSeal`, the file-drop adapter's ``Seal`` (sign-only or
  sign and encrypt).
"""
