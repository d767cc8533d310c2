"""Authentication: who a client is, verified once per connection or HTTP request.

``Authenticator`` (authenticator.py) is built from the config and read by the
transports at admission; ``api_keys.py`` and ``tokens.py`` verify each kind of
credential. Authorization, which reads the identity this sets, is a policy of the
gateway core (gateway/authz.py).
"""
